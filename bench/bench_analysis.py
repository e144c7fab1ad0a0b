"""Benchmark `analysis norms` against plain zarr + numpy.percentile, in one run.

    .venv/bin/python bench/bench_analysis.py [--images 50000] [--repeats 3]

Writes a synthetic store (ViT-S/14 at 224 px geometry, 257 tokens) through
`vitreg.cache`, then times, alternately, (a) reading `norms` with plain zarr
and `numpy.percentile` over its patch tokens, and (b) `run_norms` over every
image (figure and JSON included). Bytes read are counted at zarr's LocalStore.
Target: (b) <= 2 x (a) in time and <= 1.1 x the stored bytes of `norms`.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Self

import click
import numpy as np
import zarr
import zarr.storage

from vitreg.analysis import run_norms
from vitreg.cache import Geometry, default_chunk_rows
from vitreg.testing import write_store

GEOMETRY = Geometry(registers=0, grid=(16, 16), dim=384, depth=12, img_size=224)


class ByteCounter:
    """Counts bytes returned by LocalStore.get while active."""

    def __init__(self) -> None:
        self.reads: Counter = Counter()
        self._original = zarr.storage.LocalStore.get

    def __enter__(self) -> Self:
        original, reads = self._original, self.reads

        async def get(store, key, prototype=None, byte_range=None):
            buf = await original(store, key, prototype, byte_range)
            if buf is not None:
                reads[key] += len(buf)
            return buf

        zarr.storage.LocalStore.get = get
        return self

    def __exit__(self, *exc: object) -> None:
        zarr.storage.LocalStore.get = self._original

    @property
    def total(self) -> int:
        return sum(self.reads.values())


def make_store(url: str, n: int) -> None:
    rng = np.random.default_rng(42)
    norms = rng.lognormal(mean=3.0, sigma=0.2, size=(n, GEOMETRY.tokens)).astype(np.float32)
    hot = rng.random(norms.shape) < 0.015
    norms[hot] *= 8  # a high-norm mode, as in the study's Figure 4
    rows = default_chunk_rows(GEOMETRY)
    write_store(url, {"norms": norms}, geometry=GEOMETRY, chunk_rows=rows, rows_per_put=rows)


def baseline(url: str) -> float:
    norms = zarr.open_array(f"{url}/norms", mode="r")[:]
    return float(np.percentile(norms[:, GEOMETRY.prefix:], 98.0))


def stored_bytes(url: str) -> int:
    return sum(f.stat().st_size for f in (Path(url) / "norms" / "c").rglob("*") if f.is_file())


def timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


@click.command()
@click.option("--images", default=50_000, show_default=True)
@click.option("--repeats", default=5, show_default=True)
def main(images: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory(prefix="vitreg-bench-", dir=os.environ.get("VITREG_BENCH_DIR")) as tmp:
        url, out = f"{tmp}/store.zarr", f"{tmp}/out"
        start = time.perf_counter()
        make_store(url, images)
        click.echo(f"store: {images} images x {GEOMETRY.tokens} tokens, norms "
                   f"{stored_bytes(url) / 2**20:.1f} MiB stored; written in "
                   f"{time.perf_counter() - start:.1f} s")
        base, full, sample = [], [], []
        for _ in range(repeats):
            base.append(timed(baseline, url))
            full.append(timed(run_norms, [url], out=out, images=0))
            sample.append(timed(run_norms, [url], out=out, images=5000))
        with ByteCounter() as counter:
            run_norms([url], out=out, images=0)
        for name, pick in (("median", statistics.median), ("best", min)):
            b, f, s = (pick(x) for x in (base, full, sample))
            click.echo(f"[{name} of {repeats}] plain zarr read + numpy.percentile: {b:.3f} s; "
                       f"analysis norms, all images: {f:.3f} s = {f / b:.2f} x (target <= 2); "
                       f"--images 5000: {s:.3f} s = {s / b:.2f} x")
        norms_bytes = stored_bytes(url)
        click.echo(f"bytes read by analysis norms: {counter.total:,} = "
                   f"{counter.total / norms_bytes:.3f} x the {norms_bytes:,} stored bytes of "
                   "norms (target <= 1.1)")
        other = sorted({k.split("/c/")[0] for k in counter.reads if "/c/" in k} - {"norms"})
        click.echo(f"chunks of other arrays read: {other}")


if __name__ == "__main__":
    main()
