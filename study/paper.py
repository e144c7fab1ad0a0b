"""The study's plan: every model, by timm name and tag, with the extractions,
probes and analyses each table and figure of the reproducibility study needs."""

from __future__ import annotations

from vitreg.analysis.study import STUDY_MODELS

PLACEHOLDER = "FILL-ME"

#: Patch tokens kept per image in the Tables 1-3 stores: the K/2 = 32 highest norms and 32
#: drawn at random. A store is the study's setup (all tokens) on every image with at most
#: 32 outliers: 12.5% of a 224 px DINOv2 image's 256 patches (16% of a patch-16 model's
#: 196), six times the 2% average; the report counts the images that had more.
SAMPLED_K = 64

#: Extraction recipes (one store per model and recipe).
EXTRACTS: dict[str, dict] = {
    # Tables 1-3 train their probes on `train` and report on `val`, both at each model's
    # own timm evaluation transform at 224 px; every token's norm is kept for the analyses.
    # Reconstruction targets are re-decoded from the shards: no pixels are stored.
    "val": {"split": "val", "img_size": 224, "tokens": f"sampled:{SAMPLED_K}", "with": []},
    "train": {"split": "train", "img_size": 224, "tokens": f"sampled:{SAMPLED_K}", "with": []},
    # Tables 4-5: DINOv2's linear evaluation transform (resize 256, crop 224), pooled
    # features only.
    "linear_val": {"split": "val", "img_size": 224, "preprocess": "dinov2-linear",
                   "tokens": "none", "with": []},
    "linear_train": {"split": "train", "img_size": 224, "preprocess": "dinov2-linear",
                     "tokens": "none", "with": []},
    # Figures 1, 2, 5-7 and Appendix A.2 (q/k/v norms of every block: Figure 7).
    "hires": {"split": "val", "img_size": 800, "tokens": "all",
              "with": ["pixels", "blocks", "qkv", "blocks_qkv"], "limit": 64},
}

#: The study's protocol for Tables 1-3: early stopping on val (patience 3), reported on val.
STUDY_PROTOCOL = {"protocol": "study"}

#: Probe recipes: probe kind, training store, validation store (extract names).
PROBES: dict[str, dict] = {
    "position": {"kind": "position", "train": "train", "val": "val", "options": STUDY_PROTOCOL},
    # Trained on train and reported on val as in the study; the pixel targets are
    # re-decoded from both stores' shards (probe/redecode.py).
    "reconstruct": {"kind": "reconstruct", "train": "train", "val": "val",
                    "options": {**STUDY_PROTOCOL, "targets": "shards"}},
    "classify": {"kind": "classify", "train": "train", "val": "val", "options": STUDY_PROTOCOL},
    "linear": {"kind": "linear", "train": "linear_train", "val": "linear_val"},
    # Table 4: run for each model whose [[model]] entry names its official `head` file.
    "head": {"kind": "linear", "train": "linear_val"},
}

#: Analysis recipes: one run over the stores of every model that lists it.
ANALYSES: dict[str, dict] = {
    "norms": {"kind": "norms", "store": "val"},
    "similarity": {"kind": "similarity", "store": "val"},
    "maps": {"kind": "maps", "store": "hires", "options": {"top": 3}},
}

_T123 = ["position", "reconstruct", "classify"]
_ALL = list(ANALYSES)
_FIG = ["val", "hires"]
_T123_STORES = ["val", "train", "hires"]
_HEAD = [*_FIG, "linear_val"]
_T5 = [*_HEAD, "linear_train"]

#: Study name -> (extractions, probes, analyses, what it is for); the timm names are
#: `vitreg.analysis.study.STUDY_MODELS`'s.
_RECIPES: dict[str, tuple[list[str], list[str], list[str], str]] = {
    "DINO-S": (_FIG, [], _ALL, "Fig. 1"),
    "DINO-B": (_FIG, [], _ALL, "Fig. 1"),
    "DINOv2-S": ([*_T123_STORES, "linear_val"], _T123, _ALL, "Tables 1-4, Figs. 1, 3, 6"),
    "DINOv2-B": (_HEAD, [], _ALL, "Table 4, Fig. 1"),
    "DINOv2-L": (_HEAD, [], _ALL, "Table 4, Figs. 2, 6, 7"),
    "DINOv2-G": ([*_T123_STORES, "linear_val"], _T123, _ALL, "Tables 1-4, Figs. 2, 3, 5"),
    "DINOv2-S+reg": (_T5, ["linear"], _ALL, "Tables 4-5"),
    "DINOv2-B+reg": (_T5, ["linear"], _ALL, "Tables 4-5"),
    "DINOv2-L+reg": (_T5, ["linear"], _ALL, "Tables 4-5"),
    "DINOv2-G+reg": (_HEAD, [], _ALL, "Table 4, Fig. 5"),
    "DeiT3-S": (_FIG, [], _ALL, "Fig. 1"),
    "DeiT3-M": (_T123_STORES, _T123, _ALL, "Tables 1-3, Figs. 1, 3, 6"),
    "DeiT3-L": (_FIG, [], _ALL, "Fig. 1"),
    "DeiT3-H": (_FIG, [], _ALL, "Figs. 1, 2 (Claim 2)"),
    "OpenCLIP-B": (_T123_STORES, _T123, _ALL, "Tables 1-3, Figs. 1, 3, 4, 6"),
    "OpenCLIP-L": (_FIG, [], _ALL, "Fig. 1"),
    "OpenCLIP-H": (_FIG, [], _ALL, "Figs. 1, 4"),
    "OpenCLIP-G": (_FIG, [], _ALL, "Fig. 1 (Claim 2)"),
}

#: Study name -> (timm name with tag, extractions, probes, analyses, what it is for).
PAPER_MODELS: dict[str, tuple[str, list[str], list[str], list[str], str]] = {
    name: (STUDY_MODELS[name], *recipe) for name, recipe in _RECIPES.items()
}

#: Study models with an official DINOv2 linear head (Table 4): the file name in
#: facebookresearch/dinov2's releases, for the plan's optional `head` line.
OFFICIAL_HEADS: dict[str, str] = {
    f"DINOv2-{size}{reg}": f"dinov2_vit{size.lower()}14{reg.replace('+reg', '_reg4')}"
                           "_linear_head.pth"
    for size in "SBLG" for reg in ("", "+reg")
}

RESOURCES: dict[str, object] = {
    "partition": "", "gpus_per_job": 1, "cpus_per_gpu_job": 8, "cpus_per_cpu_job": 16,
    "mem_gb": 64, "timeout_min": 1440,
    # --executor submitit-local (one node): GPUs to spread extractions over (one job per
    # GPU at a time; 0: no GPU), and how many CPU jobs (probes, analyses) run at once.
    "local_gpus": 0, "local_cpu_jobs": 2,
}
