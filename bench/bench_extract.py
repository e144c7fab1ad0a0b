"""`vitreg extract` against the bare forward pass of the same model and a naive
loop, with vitreg's process settings and without, in one run.

    .venv/bin/python bench/bench_extract.py [--images DIR] [--model NAME]
        [--precision bf16] [--batch-size 16] [--workers 0,1,2] [--repeats 2]

Shards are built from the JPEGs of --images (by default 100 made from the
photos that installed packages ship; see benchutil.py).
The parent runs, per repeat, one child process "tuned" as the `vitreg`
command tunes itself (glibc's allocator thresholds, `tune_allocator`) and one
"untuned" (`VITREG_NO_TUNING=1`), alternating, so that the shared machine's
noise hits both alike. Each child measures, side by side on
the same images, every run between two bare forwards (bracketed):

- the bare forward pass (`forward_features`) on random tensors: same model,
  precision and batch size, as many images;
- `run_extract` (every array of the store contract) for each --workers value,
  after one warm-up extraction (as the bare forward skips its first batch);
  with 0 workers also the GPU path's way of decoding (a background thread
  overlapping the model) instead of the CPU's (all cores between batches);
- a naive loop like the public reproductions: PIL + DataLoader over the image
  files + a forward hook on the last block + `np.save` of the tokens per batch;

and the minor page faults of the bare forward and of extract (the allocator's
footprint). The first repeat also runs the `vitreg extract` command itself in
a fresh process, both ways, to show whether the CLI's own tuning takes
effect. Printed: medians and their ratios, peak RSS, bytes on disk per image
against the raw float16 payload of `tokens`, and the writer wait.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from benchutil import (
    add_images_option,
    child_result,
    image_folder,
    load_jpegs,
    report,
    write_shards,
)


def minflt() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def bare_forward(name: str, *, n: int, batch_size: int, precision: str, img_size: int) -> tuple[float, int]:
    """images/s of `forward_features` on random tensors after one warm-up batch, and page faults."""
    from vitreg.extract.capture import autocast
    from vitreg.extract.model import build_model

    model = build_model(name, weights="random", img_size=img_size).model
    x = torch.randn(batch_size, 3, img_size, img_size)
    device = torch.device("cpu")
    with torch.inference_mode(), autocast(precision, device):
        model.forward_features(x)
        faults = minflt()
        start = time.perf_counter()
        done = 0
        while done < n:
            model.forward_features(x)
            done += batch_size
    return done / (time.perf_counter() - start), minflt() - faults


class _Files(torch.utils.data.Dataset):
    def __init__(self, paths, transform):
        self.paths, self.transform = paths, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.open(self.paths[i]).convert("RGB")), i


def naive_loop(name: str, paths: list[Path], out: Path, *, batch_size: int, precision: str,
               img_size: int, workers: int) -> float:
    """The public reproductions' loop: images/s over the image files, model build excluded."""
    import timm

    from vitreg.extract.capture import autocast
    from vitreg.extract.model import build_model

    loaded = build_model(name, weights="random", img_size=img_size)
    model = loaded.model
    cfg = dict(loaded.data_config)
    transform = timm.data.create_transform(**cfg, is_training=False)
    loader = torch.utils.data.DataLoader(_Files(paths, transform), batch_size=batch_size,
                                         num_workers=workers)
    kept = {}
    model.blocks[-1].register_forward_hook(lambda m, a, o: kept.__setitem__("tokens", o))
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with torch.inference_mode(), autocast(precision, torch.device("cpu")):
        for b, (x, _) in enumerate(loader):
            model.forward_features(x)
            np.save(out / f"tokens_{b:05d}.npy", kept["tokens"].float().numpy().astype(np.float16))
    return len(paths) / (time.perf_counter() - start)


def child(args: argparse.Namespace) -> None:
    """Every extraction and the naive loop run between two bare forwards; each
    is also divided by the mean of the two, so that the machine's drifting
    load (other jobs share it) weighs on both sides of a ratio alike."""
    from vitreg.core.runtime import tune_allocator
    from vitreg.extract.run import run_extract

    tune_allocator()  # no-op untuned (VITREG_NO_TUNING=1)
    tmp = Path(args.tmp)
    result: dict = {"extract": {}, "extract_faults": {}, "writer_wait": {}, "bracketed": {}}
    paths = [jpeg.path for jpeg in load_jpegs(args.images)]
    n = len(paths)

    def bare() -> float:
        rate, faults = bare_forward(args.model, n=n, batch_size=args.batch_size,
                                    precision=args.precision, img_size=args.img_size)
        result.setdefault("bare_faults", faults)
        bares.append(rate)
        return (bares[-2] + bares[-1]) / 2 if len(bares) > 1 else rate

    def extract(w: int):
        return run_extract(
            shards=args.shards, model=args.model, out=str(tmp / "store.zarr"), weights="random",
            img_size=args.img_size, batch_size=args.batch_size, precision=args.precision,
            workers=w, overwrite=True, progress=False,
        )

    bares: list[float] = []
    # The first passes of a process run slow (oneDNN builds its kernels for each
    # shape): one bare forward and one extraction, not counted, as the bare
    # forward itself skips its first batch. A real run amortises this over
    # thousands of images; these runs have 100.
    bare_forward(args.model, n=2 * args.batch_size, batch_size=args.batch_size,
                 precision=args.precision, img_size=args.img_size)
    extract(0)
    bare()
    for w in [int(x) for x in args.workers.split(",")]:
        faults = minflt()
        summary = extract(w)
        result["extract"][w] = summary.images_per_second
        result["extract_faults"][w] = minflt() - faults
        result["writer_wait"][w] = summary.writer_waited
        result["bracketed"][str(w)] = summary.images_per_second / bare()
        if w == 0:  # the alternative vitreg uses on a GPU: decoding overlapped with the model
            import vitreg.extract.run as run_mod

            default = run_mod.overlap_decoding
            run_mod.overlap_decoding = lambda workers, device: workers == 0
            try:
                rate = extract(0).images_per_second
            finally:
                run_mod.overlap_decoding = default
            result["bracketed"]["w0 overlapped"] = rate / bare()
    result["naive"] = naive_loop(args.model, paths, tmp / "naive", batch_size=args.batch_size,
                                 precision=args.precision, img_size=args.img_size,
                                 workers=args.naive_workers)
    result["bracketed"]["naive"] = result["naive"] / bare()
    result["bare"] = statistics.median(bares)
    result["bares"] = bares
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report(result)


def run_child(args: argparse.Namespace, images: Path, shards: list[str], tmp: Path,
              mallopt: bool) -> dict:
    env = dict(os.environ)
    env.pop("VITREG_NO_TUNING", None)
    env.pop("OMP_WAIT_POLICY", None)
    if not mallopt:
        env["VITREG_NO_TUNING"] = "1"
    cmd = [sys.executable, __file__, "--child", "--tmp", str(tmp), "--model", args.model,
           "--precision", args.precision, "--batch-size", str(args.batch_size),
           "--img-size", str(args.img_size), "--workers", args.workers,
           "--naive-workers", str(args.naive_workers), "--images", str(images), "--shards", *shards]
    data = child_result(cmd, env)
    data["extract"] = {int(k): v for k, v in data["extract"].items()}
    return data


def run_cli(args: argparse.Namespace, shards: list[str], out: Path, mallopt: bool, workers: int) -> tuple[float, int]:
    """`vitreg extract` in a fresh process: its printed img/s and its minor page faults."""
    env = dict(os.environ)
    env.pop("VITREG_NO_TUNING", None)
    env.pop("OMP_WAIT_POLICY", None)
    if not mallopt:
        env["VITREG_NO_TUNING"] = "1"
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
    cmd = [sys.executable, "-m", "vitreg", "extract", *shards, "--model", args.model,
           "--weights", "random", "--img-size", str(args.img_size), "--precision", args.precision,
           "--batch-size", str(args.batch_size), "--workers", str(workers), "--out", str(out),
           "--overwrite", "--no-progress"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, cwd=out.parent)
    faults = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - before
    match = re.search(r"\(([\d.]+) img/s\)", res.stdout + res.stderr)
    if match is None:
        raise RuntimeError(f"vitreg extract failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return float(match.group(1)), faults


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_images_option(parser)
    parser.add_argument("--model", default="vit_small_patch14_reg4_dinov2.lvd142m")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--naive-workers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-cli", action="store_true", help="skip the `vitreg extract` command check")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    parser.add_argument("--shards", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    from vitreg.cache import open_store
    from vitreg.cache.layout import array_sizes

    tmp = Path(tempfile.mkdtemp(prefix="vitreg-bench-", dir=os.environ.get("VITREG_BENCH_DIR")))
    images = image_folder(args.images, tmp)
    jpegs = load_jpegs(images)
    shards = write_shards(jpegs, len(jpegs), tmp / "shards", per_shard=50)
    print(f"{args.model} {args.img_size}px {args.precision} batch {args.batch_size}; {len(jpegs)} images, "
          f"{len(shards)} shards; {os.cpu_count()} cores; torch {torch.__version__}; {load()}")
    runs: dict[bool, list[dict]] = {True: [], False: []}
    cli: dict[bool, tuple[float, int]] = {}
    for rep in range(args.repeats):
        for mallopt in ((True, False) if rep % 2 == 0 else (False, True)):
            r = run_child(args, images, shards, tmp / ("on" if mallopt else "off"), mallopt)
            runs[mallopt].append(r)
            ext = ", ".join(f"w{w} {v:5.1f}" for w, v in r["extract"].items())
            bracketed = ", ".join(f"{k} {v:.3f}" for k, v in r["bracketed"].items())
            print(f"repeat {rep} {'tuned  ' if mallopt else 'untuned'}: bare {r['bare']:5.1f} img/s "
                  f"(runs: {', '.join(f'{b:.1f}' for b in r['bares'])}) "
                  f"({r['bare_faults']} faults), extract {ext} img/s, naive {r['naive']:5.1f} img/s, "
                  f"peak RSS {r['peak_rss_mib']:.0f} MiB   {load()}\n"
                  f"    each over its bracketing bare forwards: {bracketed}")
        if rep == 0 and not args.no_cli:
            for mallopt in (True, False):
                cli[mallopt] = run_cli(args, shards, tmp / "cli.zarr", mallopt, workers=1)
                print(f"  vitreg extract (CLI, workers 1) {'tuned  ' if mallopt else 'untuned'}: "
                      f"{cli[mallopt][0]:5.1f} img/s, {cli[mallopt][1]} minor faults")

    def med(mallopt: bool, key: str, w: int | None = None) -> float:
        vals = [r[key] if w is None else r[key][w] for r in runs[mallopt]]
        return statistics.median(vals)

    workers = [int(x) for x in args.workers.split(",")]
    print(f"\nmedians of {args.repeats} repeats; {load()}")
    print(f"{'':34s} {'tuned':>12s} {'untuned':>12s}   tuned/untuned")
    rows = [("bare forward", "bare", None)] + [(f"extract loop, workers {w}", "extract", w) for w in workers] \
        + [(f"naive loop, workers {args.naive_workers}", "naive", None)]
    for label, key, w in rows:
        on, off = med(True, key, w), med(False, key, w)
        print(f"{label:34s} {on:8.1f} img/s {off:8.1f} img/s   {on / off:.2f}")
    print(f"{'bare forward page faults':34s} {med(True, 'bare_faults'):12.0f} {med(False, 'bare_faults'):12.0f}")
    for w in workers:
        print(f"{f'extract w{w} page faults (main)':34s} "
              f"{statistics.median(r['extract_faults'][str(w)] for r in runs[True]):12.0f} "
              f"{statistics.median(r['extract_faults'][str(w)] for r in runs[False]):12.0f}")
    for mallopt in (True, False):
        b = med(mallopt, "bare")
        ratios = "   ".join(f"w{w} {med(mallopt, 'extract', w) / b:.3f}" for w in workers)
        naive = med(mallopt, "naive")
        best = max(med(mallopt, "extract", w) for w in workers)
        print(f"{'tuned  ' if mallopt else 'untuned'}: extract / bare  {ratios}   naive / bare "
              f"{naive / b:.3f}   best extract / naive {best / naive:.2f}   writer wait (w1) "
              f"{statistics.median(r['writer_wait'].get('1', 0.0) for r in runs[mallopt]):.2f} s")
    for mallopt in (True, False):
        keys = [str(w) for w in workers] + (["w0 overlapped"] if 0 in workers else []) + ["naive"]
        ratios = "   ".join(
            f"{'w' + k if k.isdigit() else k} {statistics.median(r['bracketed'][k] for r in runs[mallopt]):.3f}"
            for k in keys)
        print(f"{'tuned  ' if mallopt else 'untuned'}: over the bracketing bare forwards (median)  {ratios}")
    if cli:
        print(f"vitreg extract CLI: tuned {cli[True][0]:.1f} img/s ({cli[True][1]} faults), "
              f"VITREG_NO_TUNING=1 {cli[False][0]:.1f} img/s ({cli[False][1]} faults)")
    store = open_store(str(tmp / "on" / "store.zarr"))
    sizes = array_sizes(store)
    on_disk = sum(s for *_, s, _ in sizes)
    geom = store.geometry
    payload = geom.tokens * geom.dim * 2
    print(f"on disk per image            {on_disk / store.n_rows / 1024:7.1f} KiB "
          f"(raw float16 tokens {payload / 1024:.1f} KiB; ratio {on_disk / store.n_rows / payload:.3f})")
    for name, shape, dtype, stored, raw in sizes:
        print(f"  {name:20s} {shape!s:22s} {dtype:8s} {stored / 1024:9.1f} KiB"
              + (f"  {raw / stored:5.2f}x" if stored and raw else ""))


if __name__ == "__main__":
    main()
