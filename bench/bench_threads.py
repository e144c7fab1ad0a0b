"""CPU extraction with DataLoader workers: torch's OpenMP threads against the
decode processes, in one run.

    .venv/bin/python bench/bench_threads.py [--images DIR] [--model NAME] [--workers 0,1] [--repeats 2]
    .venv/bin/python bench/bench_threads.py --model vit_pico_patch16_224_1block --n 2000 \
        --workers 2 --precision fp32 --batch-size 32     # the data path of bench_datapath

On a CPU the model's OpenMP threads and the decode workers share the cores.
libgomp's threads spin at every barrier; when a decode worker takes one of
their cores, the others spin until it comes back, and a bf16 forward pass
can lose most of its speed. Each configuration runs `run_extract` over the
JPEGs of --images (by default 100 made from packaged photos; see
benchutil.py), repeated to --n, in a fresh child process (OpenMP reads its settings
when torch loads), interleaved and repeated:

- `default`: OpenMP's own wait policy (spin, then sleep), torch's default threads;
- `passive`: `OMP_WAIT_POLICY=PASSIVE` (threads sleep instead of spinning);
- `cores-workers`: `torch.set_num_threads(max(1, cores - workers))`;

and the bare forward pass of the same model in the same child for reference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
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

POLICIES = ("default", "passive", "cores-workers")


def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_datapath  # noqa: F401 - registers the one-block models
    import torch

    from vitreg.core.runtime import tune_allocator
    from vitreg.extract.capture import autocast
    from vitreg.extract.model import build_model
    from vitreg.extract.run import run_extract

    tune_allocator()
    if args.policy == "cores-workers":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - args.w))
    model = build_model(args.model, weights="random", img_size=224).model
    x = torch.randn(args.batch_size, 3, 224, 224)
    batches = args.n // args.batch_size + 1
    with torch.inference_mode(), autocast(args.precision, torch.device("cpu")):
        model.forward_features(x)
        start = time.perf_counter()
        for _ in range(batches):
            model.forward_features(x)
        bare = batches * args.batch_size / (time.perf_counter() - start)
    cpu0 = time.process_time()
    s = run_extract(shards=args.shards, model=args.model, out=str(Path(args.tmp) / "s.zarr"),
                    weights="random", img_size=224, batch_size=args.batch_size,
                    precision=args.precision, workers=args.w, overwrite=True, progress=False)
    report({"bare": bare, "extract": s.images_per_second,
                                  "main_cpu_ms": (time.process_time() - cpu0) / s.processed * 1e3,
                                  "threads": torch.get_num_threads()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_images_option(parser)
    parser.add_argument("--model", default="vit_small_patch14_reg4_dinov2.lvd142m")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", default="0,1")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--n", type=int, default=100, help="images: the samples, repeated")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--policy", help=argparse.SUPPRESS)
    parser.add_argument("--w", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    parser.add_argument("--shards", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    tmp = Path(tempfile.mkdtemp(prefix="vitreg-threads-", dir=os.environ.get("VITREG_BENCH_DIR")))
    shards = write_shards(load_jpegs(image_folder(args.images, tmp)), args.n, tmp / "shards", per_shard=500)
    configs = [(p, int(w)) for w in args.workers.split(",") for p in args.policies.split(",")
               if not (p == "cores-workers" and int(w) == 0)]  # same as default
    res: dict[tuple[str, int], list[dict]] = {c: [] for c in configs}
    print(f"{args.model} {args.precision} batch {args.batch_size}, {args.n} images, {os.cpu_count()} cores; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for rep in range(args.repeats):
        for policy, w in configs:
            env = dict(os.environ)
            env.pop("OMP_WAIT_POLICY", None)
            if policy == "passive":
                env["OMP_WAIT_POLICY"] = "PASSIVE"
            cmd = [sys.executable, __file__, "--child", "--policy", policy, "--w", str(w),
                   "--tmp", str(tmp), "--model", args.model, "--precision", args.precision,
                   "--batch-size", str(args.batch_size), "--n", str(args.n), "--shards", *shards]
            r = child_result(cmd, env)
            res[(policy, w)].append(r)
            print(f"repeat {rep} {policy:14s} workers {w}: threads {r['threads']}, bare "
                  f"{r['bare']:5.1f} img/s, extract loop {r['extract']:5.1f} img/s, main process "
                  f"{r['main_cpu_ms']:.2f} CPU ms/img   load average "
                  f"{os.getloadavg()[0]:.2f}")
    print(f"\nmedians of {args.repeats}; extract / bare in the same child, and extract against "
          "the default policy's bare forward with 0 workers")
    ref = statistics.median(r["bare"] for r in res[("default", 0)]) if ("default", 0) in res else None
    for (policy, w), rs in res.items():
        b = statistics.median(r["bare"] for r in rs)
        e = statistics.median(r["extract"] for r in rs)
        cpu = statistics.median(r["main_cpu_ms"] for r in rs)
        tail = f"   extract / default bare {e / ref:.3f}" if ref else ""
        print(f"{policy:14s} workers {w}: bare {b:5.1f}  extract {e:5.1f} img/s   extract / bare "
              f"{e / b:.3f}   main process {cpu:.2f} CPU ms/img{tail}")


if __name__ == "__main__":
    main()
