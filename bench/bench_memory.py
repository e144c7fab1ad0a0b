"""Peak resident memory of `extract` for 200 and 2,000 images, in one run.

    .venv/bin/python bench/bench_memory.py [--images DIR] [--sizes 200,2000] [--model NAME]
        [--workers 2] [--chunk-rows N]

Each size runs `run_extract` in a fresh child process (shards of the JPEGs of
--images, by default 100 made from packaged photos, repeated under new keys
as in bench_datapath.py; the
default model is that bench's one-block ViT, whose memory is small, so that
any growth with the number of images would show). The child samples its own
RSS every 0.1 s from /proc while it extracts and reports: RSS after the model
is built, the peak during the loop, RSS at 25/50/75/100% of the loop, the
peak of the DataLoader workers (RUSAGE_CHILDREN), and ru_maxrss. The store's
chunk rows follow the image count up to 16 MiB of tokens (one 200-row chunk
for 200 images, 500-row chunks for 2,000); the writer holds up to three
chunks, so `--chunk-rows` fixes them to compare image counts alone.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchutil import (
    add_images_option,
    child_result,
    image_folder,
    load_jpegs,
    report,
    write_shards,
)

BENCH = Path(__file__).resolve().parent


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(BENCH))
    import bench_datapath  # noqa: F401 - registers the one-block models

    from vitreg.cache import open_store
    from vitreg.core.runtime import tune_allocator
    from vitreg.extract.run import run_extract

    tune_allocator()
    tmp = Path(args.tmp)
    shards = write_shards(load_jpegs(args.images), args.n, tmp / "shards", 500)
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.perf_counter(), rss_mib()))
            time.sleep(0.1)

    before = rss_mib()
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    summary = run_extract(shards=shards, model=args.model, out=str(tmp / "store.zarr"),
                          weights="random", batch_size=args.batch_size, precision=args.precision,
                          workers=args.workers, overwrite=True, progress=False,
                          chunk_rows=args.chunk_rows)
    stop.set()
    thread.join()
    end = time.perf_counter()
    loop_start = end - summary.seconds + (summary.seconds - summary.loop_seconds)
    loop = [(t, r) for t, r in samples if t >= loop_start] or samples
    marks = {}
    for q in (0.25, 0.5, 0.75, 1.0):
        t_q = loop_start + q * (end - loop_start)
        marks[f"{int(q * 100)}%"] = min(loop, key=lambda s: abs(s[0] - t_q))[1]
    report({
        "n": args.n, "img_per_s": summary.images_per_second, "rss_start": before,
        "chunk_rows": open_store(str(tmp / "store.zarr")).chunk_rows,
        "peak_loop": max(r for _, r in loop), "marks": marks,
        "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "workers_maxrss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="200,2000")
    parser.add_argument("--model", default="vit_pico_patch16_224_1block")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk-rows", type=int, help="fix the store's chunk rows")
    add_images_option(parser)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    images = image_folder(args.images, Path(tempfile.mkdtemp(prefix="vitreg-mem-images-",
                                                            dir=os.environ.get("VITREG_BENCH_DIR"))))
    print(f"{args.model} {args.precision} batch {args.batch_size}, workers {args.workers}; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'images':>7s} {'chunk':>6s} {'img/s':>7s} {'RSS start':>10s} {'25%':>7s} {'50%':>7s} {'75%':>7s} "
          f"{'100%':>7s} {'peak loop':>10s} {'ru_maxrss':>10s} {'workers peak':>13s}  (MiB)")
    for n in [int(x) for x in args.sizes.split(",")]:
        tmp = tempfile.mkdtemp(prefix="vitreg-mem-", dir=os.environ.get("VITREG_BENCH_DIR"))
        cmd = [sys.executable, __file__, "--child", "--n", str(n), "--tmp", tmp, "--model", args.model,
               "--precision", args.precision, "--batch-size", str(args.batch_size),
               "--workers", str(args.workers), "--images", str(images)] + (
                   ["--chunk-rows", str(args.chunk_rows)] if args.chunk_rows else [])
        r = child_result(cmd)
        m = r["marks"]
        print(f"{n:7d} {r['chunk_rows']:6d} {r['img_per_s']:7.1f} {r['rss_start']:10.0f} {m['25%']:7.0f} {m['50%']:7.0f} "
              f"{m['75%']:7.0f} {m['100%']:7.0f} {r['peak_loop']:10.0f} {r['maxrss']:10.0f} "
              f"{r['workers_maxrss']:13.0f}")


if __name__ == "__main__":
    main()
