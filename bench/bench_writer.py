"""The writer alone at ViT-L geometry against a plain sequential `write()`, in one run.

    .venv/bin/python bench/bench_writer.py [--rows 8192] [--repeats 6] [--batch 256]

Rows of ViT-L/14-reg4 at 224 px (T = 261, D = 1024; every array of the
default `vitreg extract`: float16 `tokens`, `norms`, ..., strings), random,
`--source-rows` of them in memory as a loop's staging buffers would hold
them, put into a `ChunkWriter` in batches of `--batch` rows until `--rows`
are written (a sustained stream: 8,192 rows are 4.6 GB, beyond the page
cache's dirty limits of this 24 GiB machine); the store is sharded as
`vitreg extract` shards it for ViT-L (chunks of 16 rows, shards of 256),
with the schema's crc32c checksum on every chunk. Candidates:

- `plain`: the same bytes, one `write()` per array per shard file, from the
  source arrays (no copy, no checksum): what the disk takes;
- `plain-512k`: the same, one `write()` per 512 KiB (the writer's slice);
- `writer`: `ChunkWriter` as `vitreg extract` uses it (`shardfile`,
  `write_threads()` threads: 1 on 2 cores, else 2; batches lent: written
  from the caller's arrays, no copy);
- `writer-1t`, `writer-2t`: the same with one thread, with two;
- `copy`: as `writer`, batches copied into the writer's buffers (`lend=False`);
- `zarr`: one thread, copied, every array written through zarr (the writer
  before `cache/shardfile.py`).

Fair to both sides: each run writes new files into a new folder on the same
disk (`$VITREG_BENCH_DIR` or the system's temporary folder), deleted after;
before each run everything is synced (untimed), so no run pays for the
writeback or the discards of another; one untimed warm-up run per candidate
(the first run of a process pays for its page cache's memory); the order is
ABBA (reversed every other repeat). Two figures per run: to the page cache
(first `put` to `close()`, as a plain `write()` returns), and durable (the
same plus an `fsync` of every file and folder written, timed). The issue's
bar is the median over repeats of writer / plain >= 0.8.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections import deque
from pathlib import Path

import numpy as np

import vitreg.cache.writer as writer_module
from vitreg.cache import ChunkWriter, Geometry, arrays_for
from vitreg.cache.shardfile import CRC32C_MODULE
from vitreg.cache.store import ensure_store
from vitreg.testing import synthetic_attrs

VIT_L = Geometry(registers=4, grid=(16, 16), dim=1024, depth=24, img_size=224)
CHUNK_ROWS, SHARD_ROWS = 16, 256  # what `vitreg extract` picks for ViT-L on a large store


def rows_of_data(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(42)
    data = {}
    for spec in arrays_for([], "all"):
        shape = (n, *spec.row_shape(VIT_L, 0))
        if spec.dtype == "string":
            data[spec.name] = np.array([f"{i:08d}" for i in range(n)], dtype=object)
        elif spec.name == "status":
            data[spec.name] = np.ones(n, np.uint8)
        elif spec.dtype.startswith("float"):
            data[spec.name] = rng.standard_normal(size=shape, dtype=np.float32).astype(spec.dtype)
        else:
            data[spec.name] = rng.integers(0, 1000, size=shape).astype(spec.dtype)
    data["error"][:] = ""
    return data


def new_store(url: str, n: int):
    return ensure_store(url, geometry=VIT_L, n_rows=n, specs=arrays_for([], "all"),
                        attrs=synthetic_attrs(VIT_L), chunk_rows=CHUNK_ROWS, shard_rows=SHARD_ROWS)


def run_writer(url: str, data: dict[str, np.ndarray], n: int, batch: int, threads: int | None,
               direct: bool = True, lend: bool = True) -> float:
    """Rows 0..n of a new store, batch after batch, the source's rows again
    and again, as the extraction loop puts them: lent (no copy) from staging
    buffers that are refilled two batches later, so the loop waits on the
    writes of the batch before last before it refills its buffers."""
    root = new_store(url, n)
    source = len(data["status"])
    start = time.perf_counter()
    writer = ChunkWriter(root, list(data), threads=threads,
                         max_pending_rows=2 * batch + SHARD_ROWS)
    if not direct:
        writer.layouts = dict.fromkeys(writer.layouts)  # every array through zarr
    lent = deque()
    for lo in range(0, n, batch):
        while len(lent) >= 2:  # the staging buffers of the batch before last are refilled now
            lent.popleft().wait()
        rows = np.arange(lo, min(lo + batch, n))
        at = lo % source
        lent.append(writer.put(rows, {k: v[at: at + len(rows)] for k, v in data.items()},
                               lend=lend))
    writer.close()
    return time.perf_counter() - start


def run_plain(folder: str, data: dict[str, np.ndarray], n: int, piece: int = 0) -> float:
    """One write() per array per shard of the same (numeric) bytes (with
    `piece`, one write() per `piece` bytes)."""
    source = len(data["status"])
    names = [k for k, v in data.items() if v.dtype != object]
    for name in names:
        os.makedirs(Path(folder, name), exist_ok=True)
    start = time.perf_counter()
    for lo in range(0, n, SHARD_ROWS):
        for name in names:
            rows = data[name][lo % source: lo % source + min(SHARD_ROWS, n - lo)]
            with open(Path(folder, name, str(lo)), "wb", buffering=0) as f:
                if not piece:
                    f.write(rows)
                    continue
                view = memoryview(rows.reshape(-1).view(np.uint8))
                for at in range(0, len(view), piece):
                    f.write(view[at: at + piece])
    return time.perf_counter() - start


def fsync_tree(folder: str) -> None:
    """Every file and folder under `folder` on the disk (fsync each)."""
    for parent, _, files in os.walk(folder, topdown=False):
        for path in [*(os.path.join(parent, f) for f in files), parent]:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def timed(run, url: str) -> tuple[float, float]:
    """(seconds to the page cache, seconds until on the disk) of one run: the
    disk is settled first (the previous run's files deleted and everything
    synced, untimed), so no run pays for another's writeback or discards."""
    os.sync()
    cached = run(url)
    start = time.perf_counter()
    fsync_tree(url)
    return cached, cached + time.perf_counter() - start


def report(label: str, names: list[str], times: dict[str, list[float]], payload: int) -> None:
    """Rates per candidate and, against `plain`, the median of the per-repeat ratios."""
    print(f"{label}:")
    rate = {name: [payload / t / 1e6 for t in ts] for name, ts in times.items()}
    for name in names:
        print(f"  {name:10s} median {statistics.median(rate[name]):7.0f} MB/s "
              f"(runs {', '.join(f'{r:.0f}' for r in rate[name])})")
    bases = [name for name in names if name.startswith("plain")]
    for base, name in [(b, n) for b in bases for n in names if n not in bases]:
        pairs = [p / t for p, t in zip(times[base], times[name])]
        print(f"  {name} / {base}: median of the ratios {statistics.median(pairs):.3f} "
              f"(runs {', '.join(f'{p:.3f}' for p in pairs)}; "
              f"spread {min(pairs):.3f}-{max(pairs):.3f}); ratio of the medians "
              f"{statistics.median(rate[name]) / statistics.median(rate[base]):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=8192, help="rows written per run")
    parser.add_argument("--source-rows", type=int, default=512,
                        help="distinct rows in memory (a multiple of --batch and of 256)")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--candidates", default="plain,writer")
    args = parser.parse_args()
    n = args.rows
    data = rows_of_data(args.source_rows)
    payload = sum(v.nbytes for v in data.values() if v.dtype != object) \
        * args.rows // args.source_rows
    runs = {
        "plain": lambda url: run_plain(url, data, n),
        "plain-512k": lambda url: run_plain(url, data, n, 512 * 1024),
        "writer": lambda url: run_writer(url, data, n, args.batch, None),
        "writer-1t": lambda url: run_writer(url, data, n, args.batch, 1),
        "writer-2t": lambda url: run_writer(url, data, n, args.batch, 2),
        "copy": lambda url: run_writer(url, data, n, args.batch, None, lend=False),
        "zarr": lambda url: run_writer(url, data, n, args.batch, 1, direct=False, lend=False),
    }
    names = args.candidates.split(",")
    cached: dict[str, list[float]] = {name: [] for name in names}
    durable: dict[str, list[float]] = {name: [] for name in names}
    base = tempfile.mkdtemp(prefix="vitreg-writer-", dir=os.environ.get("VITREG_BENCH_DIR"))
    print(f"writer threads {writer_module.write_threads()}; {args.rows} rows of ViT-L "
          f"({payload / 1e6:.0f} MB of numeric arrays), batches of {args.batch}, shards of "
          f"{SHARD_ROWS} rows; checksum by {CRC32C_MODULE}; {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.2f}; vm.dirty_ratio {_sysctl('dirty_ratio')}%, "
          f"dirty_background_ratio {_sysctl('dirty_background_ratio')}%; in {base}", flush=True)
    try:
        for name in names:  # warm-up, untimed: the first run of a process pays for its memory
            timed(runs[name], os.path.join(base, f"{name}-warm-up"))
            shutil.rmtree(os.path.join(base, f"{name}-warm-up"))
        for repeat in range(args.repeats):
            # ABBA: each candidate runs first as often as last
            for name in names if repeat % 2 == 0 else names[::-1]:
                url = os.path.join(base, f"{name}-{repeat}")
                to_cache, to_disk = timed(runs[name], url)
                cached[name].append(to_cache)
                durable[name].append(to_disk)
                shutil.rmtree(url)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"load after {os.getloadavg()[0]:.2f}")
    report("to the page cache (first put to close(); plain: last write())", names, cached,
           payload)
    report("durable (the same, then fsync of every file and folder written, timed)", names,
           durable, payload)


def _sysctl(name: str) -> str:
    return Path("/proc/sys/vm", name).read_text().strip() if Path("/proc/sys/vm", name).exists() \
        else "?"


if __name__ == "__main__":
    main()
