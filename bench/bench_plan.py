"""Planning (counting every shard's samples from its tar headers) on one core
against one process per core, in one run.

    .venv/bin/python bench/bench_plan.py [--n 8000] [--per-shard 500] [--repeats 3]

Every extraction, dry run and resume plans all its shards before the first
batch; under torchrun every rank does. The two candidates alternate their
order between repeats; the script prints the median seconds of each, ms per
sample and their ratio, and checks that both plans are equal.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from benchutil import add_images_option, image_folder, load_jpegs, write_shards

from vitreg.extract import plan as plan_mod


def serial(urls: list[str]) -> list:
    return [plan_mod.count_shard(url) for url in urls]


def same(a: list, b: list) -> bool:
    return all(x.keys == y.keys and x.digest == y.digest and x.damage == y.damage
               and np.array_equal(x.layout.offset, y.layout.offset) for x, y in zip(a, b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8000)
    parser.add_argument("--per-shard", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    add_images_option(parser)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vitreg-plan-", dir=os.environ.get("VITREG_BENCH_DIR")))
    urls = write_shards(load_jpegs(image_folder(args.images, tmp)), args.n, tmp / "shards",
                        args.per_shard)
    print(f"{args.n} samples in {len(urls)} shards; {plan_mod.planning_processes()} planning "
          f"processes; load {os.getloadavg()[0]:.2f}")
    candidates = {"one core": serial, "one process per core": plan_mod.count_shards}
    seconds: dict[str, list[float]] = {name: [] for name in candidates}
    results = {}
    for rep in range(args.repeats):
        order = list(candidates.items())
        for name, fn in order if rep % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            results[name] = fn(urls)
            seconds[name].append(time.perf_counter() - start)
    assert same(results["one core"], results["one process per core"]), "the plans differ"
    for name, runs in seconds.items():
        median = statistics.median(runs)
        print(f"  {name:22s} {median:6.2f} s ({median / args.n * 1e3:.3f} ms/sample; runs "
              f"{', '.join(f'{r:.2f}' for r in runs)})")
    ratio = statistics.median(seconds["one core"]) / statistics.median(
        seconds["one process per core"])
    print(f"  speed-up {ratio:.2f}x; plans equal")


if __name__ == "__main__":
    main()
