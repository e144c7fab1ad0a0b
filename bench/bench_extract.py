"""`vitreg extract` against the bare forward pass of the same model, in one run.

    .venv/bin/python bench/bench_extract.py [--images DIR] [--model NAME]
        [--precision bf16] [--batch-size 16] [--repeats 3]

Shards are built from the ImageNet sample images (../shared/data by default).
Each repeat times the bare forward pass on random tensors (same model,
precision and batch size, as many images) and then a full extraction, side by
side, so that the shared machine's noise hits both alike; the ratio of the
medians is the figure. Also printed: peak RSS, bytes on disk per image
against the raw float16 payload of `tokens`, and the time the loop waited on
the writer.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from vitreg.cache import open_store
from vitreg.cache.cli import array_sizes
from vitreg.extract.capture import autocast
from vitreg.extract.model import build_model
from vitreg.extract.run import run_extract, tune_allocator
from vitreg.extract.shards import run_shards

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared/data/imagenet-samples"


def bare_forward(name: str, *, n: int, batch_size: int, precision: str, img_size: int) -> float:
    """images/s of `forward_features` on random tensors, after one warm-up batch."""
    model = build_model(name, weights="random", img_size=img_size).model
    x = torch.randn(batch_size, 3, img_size, img_size)
    device = torch.device("cpu")
    with torch.inference_mode(), autocast(precision, device):
        model.forward_features(x)
        start = time.perf_counter()
        done = 0
        while done < n:
            model.forward_features(x)
            done += batch_size
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--model", default="vit_small_patch14_reg4_dinov2.lvd142m")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tune_allocator()
    tmp = Path(tempfile.mkdtemp(prefix="vitreg-bench-"))
    shards = run_shards(src=str(args.images / "images"), out=str(tmp / "shards"),
                        synsets=str(args.images / "synsets.txt"), per_shard=50)
    bare, loop, total, waited = [], [], [], []
    for i in range(args.repeats):
        n = 100
        bare.append(bare_forward(args.model, n=n, batch_size=args.batch_size,
                                 precision=args.precision, img_size=args.img_size))
        summary = run_extract(
            shards=shards, model=args.model, out=str(tmp / "store.zarr"), weights="random",
            img_size=args.img_size, batch_size=args.batch_size, precision=args.precision,
            workers=args.workers, overwrite=True, progress=False,
        )
        loop.append(summary.images_per_second)
        total.append(summary.processed / summary.seconds)
        waited.append(summary.writer_waited)
        print(f"repeat {i}: bare {bare[-1]:.1f} img/s, extract loop {loop[-1]:.1f} img/s, "
              f"end to end {total[-1]:.1f} img/s, writer wait {waited[-1]:.2f} s")
    store = open_store(str(tmp / "store.zarr"))
    sizes = array_sizes(store)
    on_disk = sum(s for *_, s, _ in sizes)
    geom = store.geometry
    payload = geom.tokens * geom.dim * 2
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    b, lp, tt = (statistics.median(v) for v in (bare, loop, total))
    print(f"\n{args.model} {args.img_size}px {args.precision} batch {args.batch_size}, "
          f"workers {args.workers}, {store.n_rows} images, {torch.get_num_threads()} threads")
    print(f"bare forward (median)        {b:7.1f} img/s")
    print(f"extract loop (median)        {lp:7.1f} img/s   ratio {lp / b:.3f}")
    print(f"extract end to end (median)  {tt:7.1f} img/s   ratio {tt / b:.3f}  (incl. model build, shard count)")
    print(f"peak RSS                     {peak:7.0f} MiB")
    print(f"on disk per image            {on_disk / store.n_rows / 1024:7.1f} KiB "
          f"(raw float16 tokens {payload / 1024:.1f} KiB; ratio {on_disk / store.n_rows / payload:.3f})")
    for name, shape, dtype, stored, raw in sizes:
        print(f"  {name:20s} {str(shape):22s} {dtype:8s} {stored / 1024:9.1f} KiB"
              + (f"  {raw / stored:5.2f}x" if stored and raw else ""))


if __name__ == "__main__":
    main()
