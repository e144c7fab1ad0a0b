"""What checking every chunk on read costs (`cache.guard`), in one run.

    .venv/bin/python bench/bench_guard.py [--images 20000] [--repeats 7]

Writes a complete synthetic store (ViT-S/14 at 224 px: 257 tokens) and times,
alternately, each read with the checks (a complete store: a missing chunk is
an error, a chunk's size is checked, a local file must lie inside the store)
and without them (the reader as before: the checks switched off):

- `batches`: `Store.batches(["norms"])` over every row (memory maps);
- `one row`: 2,000 single-row slices of `norms` at random rows (a map each:
  the worst case, a path check per row);
- `zarr norms` / `zarr key`: whole arrays through zarr (the guarded store's
  `get` against a `get` that only passes the bytes on).

Prints the median time of each and the ratio checked / unchecked with its
spread (min-max over the repeats). Target: every ratio <= 1.05, except single
rows (reported).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import click
import numpy as np

import vitreg.cache.guard as guard
import vitreg.cache.mapped as mapped_module
from vitreg.cache import Geometry, open_store
from vitreg.testing import write_store

GEOMETRY = Geometry(registers=0, grid=(16, 16), dim=384, depth=12, img_size=224)


@contextmanager
def unchecked():
    """The reader without the guard's checks."""
    saved = (mapped_module.inside, guard.GuardedStore.get)

    async def plain_get(self, key, prototype, byte_range=None):
        return await self._store.get(key, prototype, byte_range)

    def plain_stat(root, key, where, seen=None):  # what the reader did before: one stat
        try:
            return os.stat(os.path.join(root, key))
        except FileNotFoundError:
            return None

    mapped_module.inside = plain_stat
    guard.GuardedStore.get = plain_get
    try:
        yield
    finally:
        mapped_module.inside, guard.GuardedStore.get = saved


def cases(url: str, rows: np.ndarray) -> dict[str, Callable[[bool], None]]:
    def batches(checked: bool) -> None:
        store = open_store(url)
        store.reader("norms")._mapped.complete = checked  # the memory map's own check
        for _ in store.batches(["norms"]):
            pass

    def one_row(checked: bool) -> None:
        reader = open_store(url).reader("norms")
        reader._mapped.complete = checked
        for row in rows:
            reader[row:row + 1]

    def zarr_read(name: str) -> Callable[[bool], None]:
        return lambda checked: open_store(url).array(name)[:]

    return {"batches": batches, "one row": one_row, "zarr norms": zarr_read("norms"),
            "zarr key": zarr_read("key")}


def timed(fn: Callable[[bool], None], checked: bool) -> float:
    t0 = time.perf_counter()
    if checked:
        fn(True)
    else:
        with unchecked():
            fn(False)
    return time.perf_counter() - t0


@click.command()
@click.option("--images", default=20000, show_default=True)
@click.option("--repeats", default=7, show_default=True)
def main(images: int, repeats: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench_guard_"))
    rng = np.random.default_rng(42)
    url = write_store(str(folder / "store.zarr"), {
        "norms": rng.gamma(2.0, size=(images, GEOMETRY.tokens)).astype(np.float32),
    }, geometry=GEOMETRY, chunk_rows=256)
    rows = rng.integers(0, images, 2000)
    print(f"store {url}: {images} rows, chunks of 256 rows")
    for name, fn in cases(url, rows).items():
        fn(True)  # warm the page cache
        times: dict[bool, list[float]] = {True: [], False: []}
        for i in range(repeats):
            for checked in ((True, False) if i % 2 else (False, True)):
                times[checked].append(timed(fn, checked))
        ratios = [a / b for a, b in zip(times[True], times[False])]
        print(f"{name:>11}: checked {statistics.median(times[True]) * 1e3:8.2f} ms, unchecked "
              f"{statistics.median(times[False]) * 1e3:8.2f} ms, ratio "
              f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})")


if __name__ == "__main__":
    main()
