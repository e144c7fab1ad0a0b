"""Write a complete store from arrays held in memory, through the real writer.

For tests and benchmarks of the stage-2 code, which need stores with planted,
known answers and no model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .reader import mark_complete
from .schema import ARRAYS, Geometry
from .store import create_store
from .writer import STATUS_OK, ChunkWriter


def synthetic_attrs(geometry: Geometry, **extra: Any) -> dict[str, Any]:
    """Root attributes of a store with no model behind it."""
    attrs = {
        "model": "synthetic",
        "weights": "synthetic",
        "weights_sha256": None,
        "img_size": geometry.img_size,
        "patch_size": geometry.img_size // geometry.grid[0],
        "grid": list(geometry.grid),
        "prefix_tokens": geometry.prefix,
        "registers": geometry.registers,
        "embed_dim": geometry.dim,
        "depth": geometry.depth,
        "token_mode": "all",
        "with": [],
        "seed": 42,
    }
    attrs.update(extra)
    return attrs


def write_store(
    url: str,
    arrays: dict[str, np.ndarray],
    *,
    geometry: Geometry,
    chunk_rows: int = 16,
    shard_rows: int | None = None,
    rows_per_put: int = 7,
    complete: bool = True,
    sample_k: int = 0,
    **attrs: Any,
) -> str:
    """Create a store at `url` holding `arrays` (full length, first axis = row).

    `status` defaults to all ok, `key` to "000000"..., `label` to -1 and
    `error` to "". Arrays of the contract that are not given stay at their
    fill value. Rows go through `ChunkWriter` in pieces of `rows_per_put`, so
    the writer's buffering is exercised too.
    """
    n = len(next(iter(arrays.values())))
    arrays = dict(arrays)
    arrays.setdefault("status", np.full(n, STATUS_OK, np.uint8))
    arrays.setdefault("key", np.array([f"{i:06d}" for i in range(n)], dtype=object))
    arrays.setdefault("label", np.full(n, -1, np.int32))
    arrays.setdefault("error", np.array([""] * n, dtype=object))
    specs = [ARRAYS[name] for name in ARRAYS if name in arrays or ARRAYS[name].option is None]
    if "tokens" not in arrays:
        specs = [s for s in specs if s.name != "tokens"]
    root = create_store(
        url, geometry=geometry, n_rows=n, specs=specs, chunk_rows=chunk_rows,
        shard_rows=shard_rows, attrs=synthetic_attrs(geometry, **attrs), sample_k=sample_k,
    )
    writer = ChunkWriter(root, list(arrays))
    for start in range(0, n, rows_per_put):
        rows = np.arange(start, min(start + rows_per_put, n))
        writer.put(rows, {name: value[rows] for name, value in arrays.items()})
    writer.close()
    if complete:
        mark_complete(root)
    return url
