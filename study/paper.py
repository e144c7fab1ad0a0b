"""The study's plan: every model, by timm name and tag, with the extractions,
probes and analyses each table and figure of the reproducibility study needs."""

from __future__ import annotations

PLACEHOLDER = "FILL-ME"

#: Extraction recipes (one store per model and recipe).
EXTRACTS: dict[str, dict] = {
    # The probes train on `train` and evaluate on `val`: both keep the same sampled tokens
    # (16 highest-norm, 16 others per image); every token's norm is kept for the analyses.
    "val": {"split": "val", "img_size": 224, "tokens": "sampled:32", "with": ["pixels"]},
    "train": {"split": "train", "img_size": 224, "tokens": "sampled:32", "with": []},
    "hires": {"split": "val", "img_size": 800, "tokens": "all",
              "with": ["pixels", "blocks", "qkv"], "limit": 64},
}

#: Probe recipes: probe kind, training store, validation store (extract names).
PROBES: dict[str, dict] = {
    "position": {"kind": "position", "train": "train", "val": "val"},
    # Pixels are stored for the val split only (224 px x 3 x 1.28M images is 193 GB).
    "reconstruct": {"kind": "reconstruct", "train": "val"},
    "classify": {"kind": "classify", "train": "train", "val": "val"},
    "linear": {"kind": "linear", "train": "train", "val": "val"},
}

#: Analysis recipes: one run over the stores of every model that lists it.
ANALYSES: dict[str, dict] = {
    "norms": {"kind": "norms", "store": "val"},
    "similarity": {"kind": "similarity", "store": "val"},
    "maps": {"kind": "maps", "store": "hires", "options": {"top": 3}},
}

_T123 = ["position", "reconstruct", "classify"]
_ALL = ["norms", "similarity", "maps"]

#: Study name -> (timm name with tag, extractions, probes, analyses, what it is for).
PAPER_MODELS: dict[str, tuple[str, list[str], list[str], list[str], str]] = {
    "DINO-S": ("vit_small_patch16_224.dino", ["val", "hires"], [], _ALL, "Fig. 1"),
    "DINO-B": ("vit_base_patch16_224.dino", ["val", "hires"], [], _ALL, "Fig. 1"),
    "DINOv2-S": ("vit_small_patch14_dinov2.lvd142m", ["val", "train", "hires"],
                 [*_T123, "linear"], _ALL, "Tables 1-4, Figs. 1, 3, 6"),
    "DINOv2-B": ("vit_base_patch14_dinov2.lvd142m", ["val", "train", "hires"], ["linear"],
                 _ALL, "Table 4, Fig. 1"),
    "DINOv2-L": ("vit_large_patch14_dinov2.lvd142m", ["val", "train", "hires"], ["linear"],
                 _ALL, "Table 4, Figs. 2, 6, 7"),
    "DINOv2-G": ("vit_giant_patch14_dinov2.lvd142m", ["val", "train", "hires"],
                 [*_T123, "linear"], _ALL, "Tables 1-4, Figs. 2, 3, 5"),
    "DINOv2-S+reg": ("vit_small_patch14_reg4_dinov2.lvd142m", ["val", "train", "hires"],
                     ["linear"], _ALL, "Tables 4-5"),
    "DINOv2-B+reg": ("vit_base_patch14_reg4_dinov2.lvd142m", ["val", "train", "hires"],
                     ["linear"], _ALL, "Tables 4-5"),
    "DINOv2-L+reg": ("vit_large_patch14_reg4_dinov2.lvd142m", ["val", "train", "hires"],
                     ["linear"], _ALL, "Tables 4-5"),
    "DINOv2-G+reg": ("vit_giant_patch14_reg4_dinov2.lvd142m", ["val", "train", "hires"],
                     ["linear"], _ALL, "Table 4, Fig. 5"),
    "DeiT3-S": ("deit3_small_patch16_224.fb_in22k_ft_in1k", ["val", "hires"], [], _ALL,
                "Fig. 1"),
    "DeiT3-M": ("deit3_medium_patch16_224.fb_in22k_ft_in1k", ["val", "train", "hires"], _T123,
                _ALL, "Tables 1-3, Figs. 1, 3, 6"),
    "DeiT3-L": ("deit3_large_patch16_224.fb_in22k_ft_in1k", ["val", "hires"], [], _ALL,
                "Fig. 1"),
    "DeiT3-H": ("deit3_huge_patch14_224.fb_in22k_ft_in1k", ["val", "hires"], [], _ALL,
                "Fig. 1"),
    "OpenCLIP-B": ("vit_base_patch16_clip_224.laion2b", ["val", "train", "hires"], _T123, _ALL,
                   "Tables 1-3, Figs. 1, 3, 4, 6"),
    "OpenCLIP-L": ("vit_large_patch14_clip_224.laion2b", ["val", "hires"], [], _ALL, "Fig. 1"),
    "OpenCLIP-H": ("vit_huge_patch14_clip_224.laion2b", ["val", "hires"], [], _ALL, "Fig. 4"),
}

RESOURCES: dict[str, object] = {
    "partition": "", "gpus_per_job": 1, "cpus_per_gpu_job": 8, "cpus_per_cpu_job": 16,
    "mem_gb": 64, "timeout_min": 1440,
    # --executor submitit-local (one node): GPUs to spread extractions over (one job per
    # GPU at a time; 0: no GPU), and how many CPU jobs (probes, analyses) run at once.
    "local_gpus": 0, "local_cpu_jobs": 2,
}
