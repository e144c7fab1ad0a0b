"""Store sizes for ImageNet-1k of the study's models, in both token modes.

    .venv/bin/python bench/store_sizes.py [--img-size 224] [--sampled 32]

The same estimate `vitreg extract --dry-run` prints (extract/dryrun.py),
from weightless (meta-device) builds, so even ViT-g needs no memory here.
Nothing is compressed (schema 1.1), so this is the size on disk up to the
strings `key` and `error`.
"""

from __future__ import annotations

import argparse

from vitreg.core.files import human_bytes
from vitreg.extract.dryrun import estimate_arrays
from vitreg.extract.model import model_geometry

MODELS = [
    "vit_small_patch16_224.dino", "vit_base_patch16_224.dino",
    "vit_small_patch14_dinov2.lvd142m", "vit_small_patch14_reg4_dinov2.lvd142m",
    "vit_base_patch14_dinov2.lvd142m", "vit_base_patch14_reg4_dinov2.lvd142m",
    "vit_large_patch14_dinov2.lvd142m", "vit_large_patch14_reg4_dinov2.lvd142m",
    "vit_giant_patch14_dinov2.lvd142m", "vit_giant_patch14_reg4_dinov2.lvd142m",
    "deit3_small_patch16_224.fb_in1k", "deit3_medium_patch16_224.fb_in1k",
    "deit3_large_patch16_224.fb_in1k", "deit3_huge_patch14_224.fb_in1k",
    "vit_base_patch16_clip_224.laion2b", "vit_large_patch14_clip_224.laion2b",
    "vit_huge_patch14_clip_224.laion2b",
]
SPLITS = {"train": 1_281_167, "val": 50_000}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--sampled", type=int, default=32)
    args = parser.parse_args()
    print(f"| model | T x D | val, all tokens | val, sampled:{args.sampled} "
          f"| train, all tokens | train, sampled:{args.sampled} |")
    print("|---|---|---|---|---|---|")
    for name in MODELS:
        geom = model_geometry(name, args.img_size)
        cells = []
        for split in ("val", "train"):
            for mode in ("all", f"sampled:{args.sampled}"):
                arrays = estimate_arrays(geom, SPLITS[split], with_options=[], token_mode=mode)
                cells.append(human_bytes(sum(a.nbytes for a in arrays)))
        print(f"| `{name}` | {geom.tokens} x {geom.dim} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
