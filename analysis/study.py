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

Also the study's setup of each table (`STUDY_SETUPS`), how a result's recorded
setup differs from it (`setup_differences`, marked in the report's rows), and
the choices the study leaves open with vitreg's (`DEVIATIONS`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vitreg.cache.names import NORMS

#: Study model name -> timm model name (with the pretrained tag the study used): every
#: model the study names, in its order; the one list of them (`study/paper.py`'s plan
#: reads it).
STUDY_MODELS: dict[str, str] = {
    "DINO-S": "vit_small_patch16_224.dino",
    "DINO-B": "vit_base_patch16_224.dino",
    "DINOv2-S": "vit_small_patch14_dinov2.lvd142m",
    "DINOv2-B": "vit_base_patch14_dinov2.lvd142m",
    "DINOv2-L": "vit_large_patch14_dinov2.lvd142m",
    "DINOv2-G": "vit_giant_patch14_dinov2.lvd142m",
    "DINOv2-S+reg": "vit_small_patch14_reg4_dinov2.lvd142m",
    "DINOv2-B+reg": "vit_base_patch14_reg4_dinov2.lvd142m",
    "DINOv2-L+reg": "vit_large_patch14_reg4_dinov2.lvd142m",
    "DINOv2-G+reg": "vit_giant_patch14_reg4_dinov2.lvd142m",
    # The study's DeiT3 was trained on ImageNet-1K (Section 3.5): timm's `fb_in1k` tag.
    # Darcet et al. used ImageNet-22K: `fb_in22k_ft_in1k` is the documented alternative.
    "DeiT3-S": "deit3_small_patch16_224.fb_in1k",
    "DeiT3-M": "deit3_medium_patch16_224.fb_in1k",
    "DeiT3-L": "deit3_large_patch16_224.fb_in1k",
    "DeiT3-H": "deit3_huge_patch14_224.fb_in1k",
    "OpenCLIP-B": "vit_base_patch16_clip_224.laion2b",
    "OpenCLIP-L": "vit_large_patch14_clip_224.laion2b",
    "OpenCLIP-H": "vit_huge_patch14_clip_224.laion2b",
    # "OpenCLIP-H/G" (Claim 2): G read as ViT-g/14 on LAION-2B, timm's `vit_giant_*`.
    "OpenCLIP-G": "vit_giant_patch14_clip_224.laion2b",
}

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


def study_name(model: str | None, pretrained_cfg: str | None = None) -> str | None:
    """The study's name for a timm model: its exact name WITH the pretrained tag, as given
    or as timm resolved it (`pretrained_cfg`). An untagged name is not enough: timm
    resolves `vit_base_patch16_clip_224` to a fine-tuned classifier, not OpenCLIP-B."""
    for name, timm_name in STUDY_MODELS.items():
        if timm_name in (model, pretrained_cfg):
            return name
    return None


# -- the study's setup, and how a result differs from it -----------------------------
#: Which of the study's tables each probe result fills ("head": a linear probe that
#: evaluated an official head, Table 4).
TABLE_OF = {"position": 1, "reconstruct": 2, "classify": 3, "head": 4, "linear": 5}

#: What the study states of each table's setup (Sections 3.3-3.5), field by field.
#: Tables 1-3: pretrained weights at the native 224 px, every patch token of the last
#: block, probes trained on ImageNet train with early stopping on val (patience 3) and
#: reported on val. Tables 4-5: DINOv2's linear evaluation (resize 256, centre crop 224).
STUDY_SETUPS: dict[int, dict[str, Any]] = {
    1: {"weights": "pretrained", "img_size": 224, "token_mode": "all", "protocol": "study",
        "reported_on": "val"},
    4: {"weights": "pretrained", "img_size": 224, "preprocessing_preset": "dinov2-linear",
        "reported_on": "val"},
    5: {"weights": "pretrained", "img_size": 224, "preprocessing_preset": "dinov2-linear",
        "protocol": "no selection", "reported_on": "val"},
}
STUDY_SETUPS[2] = STUDY_SETUPS[3] = STUDY_SETUPS[1]


def result_setup(result: dict[str, Any]) -> dict[str, Any]:
    """The setup fields of a result; older results (no `setup`) from their provenance."""
    setup = result.get("setup") or {}
    store = setup.get("train_store") or \
        (result.get("provenance", {}).get("train") or {}).get("attrs") or {}
    selection = setup.get("selection") or (result.get("data") or {}).get("selection")
    return {
        "model": store.get("model", result.get("store", {}).get("model")),
        "pretrained_cfg": store.get("pretrained_cfg"),
        "weights": store.get("weights", result.get("store", {}).get("weights")),
        "img_size": store.get("img_size"),
        "preprocessing_preset": store.get("preprocessing_preset"),
        "precision": store.get("precision"),
        "token_mode": store.get("token_mode"),
        "block": store.get("block"),
        "depth": store.get("depth"),
        "selection": selection,
        # an official head trains nothing: it is scored on every image of its store
        "reported_on": "val" if result.get("val_store") or setup.get("val_store")
        or (result.get("config") or {}).get("val") or setup.get("head")
        or result.get("evaluated_on") else "split",
        "head": setup.get("head") or (result.get("head") or {}).get("path"),
        "truncation": setup.get("truncation"),
    }


def result_study_name(result: dict[str, Any]) -> str | None:
    setup = result_setup(result)
    return study_name(setup["model"], setup["pretrained_cfg"])


def truncated_counts(setup: dict[str, Any]) -> tuple[int, int] | None:
    """(images with more outliers than K/2, images) over a result's parts, if recorded."""
    parts = setup["truncation"]
    if not parts:
        return None
    return (sum(int(p.get("truncated_images") or 0) for p in parts.values()),
            sum(int(p.get("used") or p.get("images") or 0) for p in parts.values()))


def _token_difference(setup: dict[str, Any]) -> str | None:
    mode = str(setup["token_mode"])
    if setup["token_mode"] is None or mode == "all":
        return None
    counted = truncated_counts(setup)
    if mode.startswith("sampled") and counted is not None:
        if counted[0] == 0:
            return None  # every outlier of every image kept: the study's setup
        return (f"tokens {mode}: {counted[0]} of {counted[1]} images had more outliers than "
                "K/2, not all of them kept (study: all tokens)")
    return f"tokens {mode} (study: all tokens)"


def _protocol_difference(setup: dict[str, Any], table: int) -> str | None:
    selection = setup["selection"]
    if selection is None:
        return "selection protocol not recorded (an older result)"
    if table == 5:
        if selection.get("grid_chosen_on") or selection.get("early_stopping_on"):
            return ("learning rate or epoch chosen on held-out training images (study: 20 "
                    "epochs, no selection)")
        return None
    if selection.get("protocol") != "study":
        return ("epoch chosen on held-out training images (--protocol heldout; study: early "
                "stopping on val, patience 3)")
    return None


def setup_differences(result: dict[str, Any], table: int) -> list[str]:
    """Every field in which a result's setup differs from the study's for `table`."""
    setup, want = result_setup(result), STUDY_SETUPS[table]
    diffs = []
    if str(setup["weights"]).lower() != "pretrained":
        diffs.append(f"weights {setup['weights']} (study: pretrained)")
    if setup["img_size"] is not None and setup["img_size"] != want["img_size"]:
        diffs.append(f"{setup['img_size']} px (study: {want['img_size']})")
    preset = want.get("preprocessing_preset")
    if preset and setup["preprocessing_preset"] != preset:
        diffs.append(f"preprocessing {setup['preprocessing_preset']} (study: {preset}, "
                     "resize 256, crop 224)")
    if setup["block"] is not None:
        diffs.append(f"tokens of block {setup['block']} of {setup['depth']} "
                     "(study: the last block)")
    if table <= 3:
        diffs.append(_token_difference(setup))
    if "protocol" in want:
        diffs.append(_protocol_difference(setup, table))
    if setup["reported_on"] != "val":
        diffs.append("reported on a held-out part of the training store (study: ImageNet val)")
    return [d for d in diffs if d]


#: Choices the study leaves open, and what vitreg does (the report's "Deviations" section).
DEVIATIONS: tuple[tuple[str, str, str], ...] = (
    ("Position: the MSE term", "loss CE + 0.5 x MSE, the MSE of a class index not defined",
     "MSE between the softmax-expected (row, col) and the true one, in patch units "
     "(a soft-argmax), so that the term is differentiable"),
    ("Position and reconstruction: heads", "one linear layer, trained on normal and outlier "
     "tokens (one head or two is not said)", "one head per token category, each with its own "
     "standardisation, learning rate and early stopping; a head fitted to the mix would be "
     "dominated by the outliers' norms"),
    ("Standardisation", "not mentioned", "features standardised with the training tokens' "
     "mean and std (an affine map: the linear model class is unchanged; --standardize false "
     "turns it off)"),
    ("Outlier threshold population", "98th percentile of the L2 norms 'calculated on a per "
     "model basis'", "the 98th percentile of every patch-token norm ([CLS] and registers "
     "excluded) of the training store; the val store is split by the same value"),
    ("Table 2 unit", "'L2 error', unit not stated (383 for DINOv2-S normal tokens)",
     "our `l2` is the mean L2 norm of the per-patch error vector on the 0-255 scale (P x P x 3 "
     "values); `mse` the mean squared error per value. For DINOv2-S (14 x 14 x 3 = 588 "
     "values), 383 matches an `l2` of a typical per-value error of about 16 intensity levels: "
     "`l2` is the column to compare, and the unit is our reading"),
    ("Learning rates and batch size", "not given", "a grid of learning rates, chosen on a "
     "held-out 10% of the training images (never the reported split); batch size 256"),
    ("Early stopping", "patience 3 on validation top-1 / MSE, and the same validation set "
     "is reported", "--protocol study does exactly that (the paper plan uses it); the default "
     "--protocol heldout stops on held-out training images and scores val once"),
    ("Sampled tokens", "all tokens of every image", "the paper plan keeps K patch tokens per "
     "image (the K/2 highest norms and K/2 drawn at random) and every token's norm: equal to "
     "the study's setup on every image with at most K/2 outliers; rows mark how many images "
     "had more"),
    ("Table 3 token draw", "a random normal and a random outlier token per image",
     "uniform over the image's outliers (and, separately, its normal tokens), seeded per "
     "chunk"),
    ("Reconstruction data", "trained on ImageNet train, reported on val", "the same: train "
     "pixel targets re-decoded from the train shards with the store's recorded preprocessing "
     "(no pixels stored for 1.28M images)"),
    ("Preprocessing, Tables 1-3", "native resolution, transform not stated", "timm's eval "
     "transform of each model's pretrained config at 224 px"),
    ("Preprocessing, Tables 4-5", "the official DINOv2 heads", "DINOv2's linear evaluation: "
     "resize 256, centre crop 224, bicubic (the `dinov2-linear` preset)"),
)


def store_truncation(store: Any) -> dict[str, int] | None:
    """For a `sampled:K` store: how many images had more outliers (by the store's own
    98th-percentile threshold) than the K/2 highest norms it kept; None for other stores.
    Read from `norms`, which holds every token's norm in every store."""
    from vitreg.cache.schema import parse_token_mode

    kind, k = parse_token_mode(str(store.meta.get("token_mode", "all")))
    if kind != "sampled":
        return None
    threshold, prefix = store.threshold(), store.geometry.prefix
    counts = [(b[NORMS][:, prefix:] > threshold).sum(1) for b in store.batches([NORMS])]
    n_out = np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
    return {"k": k, "images": int(n_out.size), "truncated_images": int((n_out > k // 2).sum()),
            "outliers": int(n_out.sum()),
            "outliers_not_kept": int(np.maximum(n_out - k // 2, 0).sum()),
            "most_outliers": int(n_out.max()) if n_out.size else 0}
