"""The study's numbers (Tables 1-5 of the reproducibility study of "Vision
Transformers Need Registers"), with the timm models its names stand for, so
that the report can print them beside ours.

Accuracies are percentages as printed in the study. Reconstructed from the
text extraction of the paper; where its column headers were lost:
- Table 2 prints one "L2 error" header over two columns (Normal, Outlier);
  the unit (pixel scale) is not stated.
- Table 3's first "[CLS] 74.81%" line precedes the "DINOv2-S" line in the
  extraction; with three rows per model it belongs to DINOv2-S.
- Table 4's pretrained heads of the with-register models equal Table 5's
  "Pretrained Head" row (81.65, 84.71, 86.80), which confirms its columns.
"""

from __future__ import annotations

#: Study model name -> timm model name (with the pretrained tag the study used).
STUDY_MODELS: dict[str, str] = {
    "DINOv2-S": "vit_small_patch14_dinov2.lvd142m",
    "DINOv2-B": "vit_base_patch14_dinov2.lvd142m",
    "DINOv2-L": "vit_large_patch14_dinov2.lvd142m",
    "DINOv2-G": "vit_giant_patch14_dinov2.lvd142m",
    "DINOv2-S+reg": "vit_small_patch14_reg4_dinov2.lvd142m",
    "DINOv2-B+reg": "vit_base_patch14_reg4_dinov2.lvd142m",
    "DINOv2-L+reg": "vit_large_patch14_reg4_dinov2.lvd142m",
    "DINOv2-G+reg": "vit_giant_patch14_reg4_dinov2.lvd142m",
    "DeiT3-M": "deit3_medium_patch16_224.fb_in22k_ft_in1k",
    "OpenCLIP-B": "vit_base_patch16_clip_224.laion2b",
    "OpenCLIP-H": "vit_huge_patch14_clip_224.laion2b",
}

#: The setup of the study's probes: pretrained weights, every patch token of
#: the last block, 224 px inputs (the native resolution of its DeiT3 and
#: OpenCLIP models; DINOv2 built at 224 px, as timm's 518 px default is not what
#: the study reports). A row of ours sits beside the study's only on this setup.
STUDY_SETUP = {"weights": "pretrained", "img_size": 224, "token_mode": "all"}

#: Table 1, position prediction: top-1 accuracy (%) and average distance (patches).
TABLE1: dict[str, dict[str, dict[str, float]]] = {
    "DINOv2-S": {"normal": {"top1": 28.05, "distance": 1.07},
                 "outlier": {"top1": 19.18, "distance": 1.27}},
    "DeiT3-M": {"normal": {"top1": 7.53, "distance": 4.29},
                "outlier": {"top1": 7.05, "distance": 3.88}},
    "OpenCLIP-B": {"normal": {"top1": 6.76, "distance": 3.87},
                   "outlier": {"top1": 8.19, "distance": 6.38}},
    "DINOv2-G": {"normal": {"top1": 45.48, "distance": 0.67},
                 "outlier": {"top1": 7.60, "distance": 7.41}},
}

#: Table 2, pixel reconstruction: L2 error of normal and outlier tokens.
TABLE2: dict[str, dict[str, dict[str, float]]] = {
    "DINOv2-S": {"normal": {"l2": 383.13}, "outlier": {"l2": 521.56}},
    "DeiT3-M": {"normal": {"l2": 801.07}, "outlier": {"l2": 1505.68}},
    "OpenCLIP-B": {"normal": {"l2": 572.54}, "outlier": {"l2": 983.69}},
    "DINOv2-G": {"normal": {"l2": 337.20}, "outlier": {"l2": 926.34}},
}

#: Table 3, image classification from one token: top-1 accuracy (%).
TABLE3: dict[str, dict[str, dict[str, float]]] = {
    "DINOv2-S": {"cls": {"top1": 74.81}, "normal": {"top1": 55.61}, "outlier": {"top1": 57.00}},
    "DeiT3-M": {"cls": {"top1": 81.08}, "normal": {"top1": 69.18}, "outlier": {"top1": 78.96}},
    "OpenCLIP-B": {"cls": {"top1": 75.77}, "normal": {"top1": 59.22},
                   "outlier": {"top1": 69.48}},
    "DINOv2-G": {"cls": {"top1": 81.56}, "normal": {"top1": 50.04}, "outlier": {"top1": 68.33}},
}

#: Table 4, ImageNet-1K top-1 (%) of the official pretrained heads, without and with registers.
TABLE4: dict[str, dict[str, float]] = {
    "DINOv2-S": {"head": 81.15}, "DINOv2-S+reg": {"head": 81.65},
    "DINOv2-B": {"head": 84.33}, "DINOv2-B+reg": {"head": 84.71},
    "DINOv2-L": {"head": 86.12}, "DINOv2-L+reg": {"head": 86.80},
    "DINOv2-G": {"head": 86.90}, "DINOv2-G+reg": {"head": 87.29},
}

#: Table 5, linear heads on representations of the register models: top-1 (%).
TABLE5: dict[str, dict[str, float]] = {
    "DINOv2-S+reg": {"head": 81.65, "cls+patch_mean": 82.28,
                     "cls+patch_mean+registers": 82.12, "patch_mean+registers": 81.60},
    "DINOv2-B+reg": {"head": 84.71, "cls+patch_mean": 85.07,
                     "cls+patch_mean+registers": 84.92, "patch_mean+registers": 83.44},
    "DINOv2-L+reg": {"head": 86.80, "cls+patch_mean": 86.62,
                     "cls+patch_mean+registers": 86.74, "patch_mean+registers": 86.58},
}

#: Probe kind -> (table number, caption, the study's numbers).
TABLES: dict[str, tuple[int, str, dict]] = {
    "position": (1, "Position prediction: top-1 accuracy (%) and average distance (patches)",
                 TABLE1),
    "reconstruct": (2, "Pixel reconstruction: L2 error (and our MSE)", TABLE2),
    "classify": (3, "Image classification from one token: top-1 accuracy (%)", TABLE3),
}


def study_name(model: str | None) -> str | None:
    """The study's name for a timm model name (with or without its pretrained tag)."""
    if not model:
        return None
    for name, timm_name in STUDY_MODELS.items():
        if model in (timm_name, timm_name.split(".")[0]):
            return name
    return None
