"""Where the extraction's device time goes, for one model, in one run.

    .venv/bin/python bench/bench_capture.py [--model NAME] [--batch-size 16] [--repeats 5]

Interleaved and repeated on the same random uint8 batch (bf16 autocast, CPU):
the bare `forward_features`, `forward_intermediates` as `Capture` calls it,
`Capture` itself (every array of the store contract), and `Step` (the
capture, the casts, the range checks on the device and the copies into the
staging buffers: `extract/step.py`). Medians, in ms per image.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vitreg.core.runtime import tune_allocator
from vitreg.extract.capture import Capture, autocast
from vitreg.extract.model import build_model
from vitreg.extract.step import Step

DTYPES = {"tokens": "float16", "norms": "float32", "attention": "float16", "neighbor_cos": "float16",
          "pooled/cls": "float32", "pooled/patch_mean": "float32", "pooled/registers": "float32"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_small_patch14_reg4_dinov2.lvd142m")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    tune_allocator()
    b = args.batch_size
    loaded = build_model(args.model, weights="random", img_size=224)
    cap = Capture(loaded, device=torch.device("cpu"), precision="bf16")
    model = loaded.model
    images = torch.randint(0, 255, (b, 3, 224, 224), dtype=torch.uint8)
    rows = np.arange(b)  # which rows of a store the batch fills (sampled tokens' seed)
    x = torch.randn(b, 3, 224, 224)
    cpu = torch.device("cpu")

    def bare():
        with torch.inference_mode(), autocast("bf16", cpu):
            model.forward_features(x)

    def inter():
        with torch.inference_mode(), autocast("bf16", cpu):
            model.forward_intermediates(x, indices=[len(model.blocks) - 1], return_prefix_tokens=True,
                                        norm=False, output_fmt="NLC")

    step = Step(cap, DTYPES)
    fns = {"bare forward_features": bare, "forward_intermediates": inter,
           "Capture (all arrays)": lambda: cap(images, rows),
           "Step (capture, casts, checks, copies)": lambda: step.finish(step.launch(images, rows))}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(args.repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    print(f"{args.model} bf16 batch {b}, {torch.get_num_threads()} threads, medians of {args.repeats}; "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    bare_ms = statistics.median(times["bare forward_features"]) * 1e3 / b
    for name, t in times.items():
        ms = statistics.median(t) * 1e3 / b
        print(f"{name:28s} {ms:7.2f} ms/img   {ms / bare_ms:6.3f} x bare")


if __name__ == "__main__":
    main()
