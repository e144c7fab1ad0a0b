"""What `--decode gpu` changes against the default PIL path, measured on the CPU.

    .venv/bin/python bench/bench_decode.py [--images DIR] [--model NAME]

For every JPEG of `--images` (default: the packaged photos; the figures in
README.md use the 100 ImageNet samples): the default path (PIL decode, then
timm's eval transform, `extract.transforms.eval_transform`) against the
device path's code run on the CPU (`extract.gpudecode.decode_batch`:
torchvision's decoder, torchvision's antialiased resize with timm's
geometry), for the model's preprocessing:

- pixels: mean and largest absolute difference (0-255), share of identical values;
- tokens: the relative error ||t_gpu - t_pil|| / ||t_pil|| of the last
  block's tokens (before the final norm), per image, of a random-init model
  whose LayerScale is set to 1 (random DINOv2 blocks are near identity
  otherwise: DESIGN.md); median and largest over the images;
- the time per image of each path on one thread.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from benchutil import add_images_option, image_folder, load_jpegs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="vit_small_patch14_reg4_dinov2")
    add_images_option(parser)
    args = parser.parse_args()
    from vitreg.extract.capture import normalize
    from vitreg.extract.data import decode_image
    from vitreg.extract.gpudecode import decode_batch
    from vitreg.extract.model import build_model
    from vitreg.extract.transforms import eval_transform

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        jpegs = load_jpegs(image_folder(args.images, Path(tmp)))
    loaded = build_model(args.model, weights="random", img_size=224)
    config = loaded.data_config
    transform = eval_transform(config)
    start = time.process_time()
    pil = torch.stack([transform(decode_image({"jpg": j.data})) for j in jpegs])
    pil_ms = (time.process_time() - start) / len(jpegs) * 1e3
    start = time.process_time()
    ours, errors, fallbacks = decode_batch([j.data for j in jpegs], config, torch.device("cpu"))
    ours_ms = (time.process_time() - start) / len(jpegs) * 1e3
    assert not any(errors), errors
    diff = (ours.int() - pil.int()).abs()
    print(f"{len(jpegs)} images, {args.model} preprocessing {config['input_size']}, crop_pct "
          f"{config.get('crop_pct')}, {config.get('interpolation')}; {fallbacks} fell back")
    print(f"pixels: mean |diff| {diff.float().mean():.3f}, max {int(diff.max())}, identical "
          f"{(diff == 0).float().mean():.3f}; per image mean |diff| median "
          f"{statistics.median(diff.float().mean(dim=(1, 2, 3)).tolist()):.3f}")
    model = loaded.model.float().eval()
    for block in model.blocks:
        for name in ("ls1", "ls2"):
            if hasattr(getattr(block, name), "gamma"):
                getattr(block, name).gamma.data.fill_(1.0)
    rel = []
    with torch.inference_mode():
        for lo in range(0, len(jpegs), 16):
            feats = [model.forward_features(normalize(x[lo: lo + 16], config["mean"],
                                                      config["std"])) for x in (pil, ours)]
            err = (feats[1] - feats[0]).flatten(1).norm(dim=1) / feats[0].flatten(1).norm(dim=1)
            rel += err.tolist()
    print(f"tokens: relative error median {statistics.median(rel):.4f}, max {max(rel):.4f} "
          f"(random weights, LayerScale 1)")
    print(f"CPU ms per image on one thread: PIL + timm {pil_ms:.2f}, torchvision decode + "
          f"resize {ours_ms:.2f} (ratio {pil_ms / ours_ms:.2f})")
    np.testing.assert_array_equal(ours.shape, pil.shape)


if __name__ == "__main__":
    main()
