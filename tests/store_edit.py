"""Edit a store's metadata the way a tamperer or another writer would: an
array's `zarr.json` and its copy in the root's consolidated metadata alike."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def edit_array_meta(url: str, array: str, change: Callable[[dict[str, Any]], Any]) -> None:
    """Apply `change` to the metadata of `array` wherever the store holds it."""
    path = Path(url) / array / "zarr.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))
    root = Path(url) / "zarr.json"
    root_meta = json.loads(root.read_text())
    consolidated = (root_meta.get("consolidated_metadata") or {}).get("metadata", {})
    if array in consolidated:
        change(consolidated[array])
        root.write_text(json.dumps(root_meta))


def random_store(url: Path, geometry, n: int, chunk_rows: int) -> Path:  # noqa: ANN001
    """A complete store of `n` rows of seeded random tokens, norms and labels."""
    import numpy as np

    from vitreg.testing import write_store

    rng = np.random.default_rng(42)
    write_store(str(url), {
        "tokens": rng.normal(size=(n, geometry.tokens, geometry.dim)).astype(np.float16),
        "norms": rng.gamma(2.0, size=(n, geometry.tokens)).astype(np.float32),
        "label": rng.integers(0, 5, n).astype(np.int32),
    }, geometry=geometry, chunk_rows=chunk_rows)
    return url
