"""What `StoreArray` (the cache's one array type) costs over what it wraps.

One planted store; each case reads the same rows through the wrapper and
through the object under it, interleaved, `--repeats` times; prints the
median time per read and the ratio wrapper / wrapped (median and spread over
the repeats):

- `map row`: one row `a[i:i+1]` of `norms` through `Store.reader` (a memory
  map) against `MappedArray` directly;
- `zarr row`: the same through `Store.array` (zarr, errors translated)
  against the zarr array directly;
- `zarr rows`: 32 scattered rows through `get_orthogonal_selection`.

Reads alternate one by one between the two; each repeat gives the median
per read of each and their ratio.

    python bench/bench_arrays.py --images 4096 --repeats 7
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np

from vitreg.cache import Geometry, names, open_store
from vitreg.testing import write_planted_store

GEOM = Geometry(registers=4, grid=(16, 16), dim=64, depth=2, img_size=64)


def paired(wrapper: Callable[[int], object], wrapped: Callable[[int], object],
           rows: np.ndarray) -> tuple[float, float]:
    """Median seconds per read of each, timed read by read in turn (so that a
    burst of load on a shared machine hits both alike)."""
    a, b = [], []
    for row in rows:
        for fn, times in ((wrapper, a), (wrapped, b)):
            t0 = time.perf_counter()
            fn(int(row))
            times.append(time.perf_counter() - t0)
    return statistics.median(a), statistics.median(b)


def cases(url: str) -> dict[str, tuple[Callable, Callable]]:
    store = open_store(url)
    mapped, checked = store.reader(names.NORMS), store.array(names.NORMS)
    raw_map, raw_zarr = mapped._mapped, checked._array  # what each wraps
    pick = np.random.default_rng(42).choice(store.n_rows, 32, replace=False)
    return {
        "map row": (lambda r: mapped[r:r + 1], lambda r: raw_map[r:r + 1]),
        "zarr row": (lambda r: checked[r:r + 1], lambda r: raw_zarr[r:r + 1]),
        "zarr rows": (lambda r: checked.get_orthogonal_selection((pick,)),
                      lambda r: raw_zarr.get_orthogonal_selection((pick,))),
    }


@click.command()
@click.option("--images", default=4096, show_default=True)
@click.option("--repeats", default=7, show_default=True)
@click.option("--reads", default=200, show_default=True, help="reads per case and repeat")
def main(images: int, repeats: int, reads: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = str(Path(tmp, "s.zarr"))
        write_planted_store(url, n_images=images, geometry=GEOM, chunk_rows=256,
                            with_pixels=False)
        rows = np.random.default_rng(0).integers(0, images, reads)
        for name, (wrapper, wrapped) in cases(url).items():
            ratios, times = [], []
            for _ in range(repeats):
                a, b = paired(wrapper, wrapped, rows)
                ratios.append(a / b)
                times.append((a, b))
            med = statistics.median(ratios)
            print(f"{name:10s} StoreArray {statistics.median(t[0] for t in times) * 1e6:8.1f} us"
                  f"  wrapped {statistics.median(t[1] for t in times) * 1e6:8.1f} us"
                  f"  ratio {med:.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
