"""The vitreg store: create, open, validate, write and read. The only code
that knows Zarr paths; `extract`, `probe` and `analysis` go through it."""

from __future__ import annotations

from .errors import (
    ConfigMismatchError,
    IncompleteStoreError,
    StoreFormatError,
    StoreNotFoundError,
    UnsafeStoreError,
    VitregError,
)
from .reader import OUTLIER_PERCENTILE, Store, mark_complete, open_store, outlier_threshold
from .schema import ARRAYS, SCHEMA_VERSION, WITH_OPTIONS, ArraySpec, Geometry, arrays_for
from .store import (
    create_store,
    default_chunk_rows,
    ensure_store,
    open_group,
    stored_arrays,
    update_attrs,
)
from .writer import STATUS_FAILED, STATUS_OK, STATUS_PENDING, ChunkWriter

__all__ = [
    "ARRAYS", "OUTLIER_PERCENTILE", "SCHEMA_VERSION", "STATUS_FAILED", "STATUS_OK",
    "STATUS_PENDING", "WITH_OPTIONS", "ArraySpec", "ChunkWriter", "ConfigMismatchError",
    "Geometry", "IncompleteStoreError", "Store", "StoreFormatError", "StoreNotFoundError",
    "UnsafeStoreError", "VitregError", "arrays_for", "create_store", "mark_complete",
    "ensure_store", "default_chunk_rows",
    "open_group", "open_store", "outlier_threshold", "stored_arrays", "update_attrs",
]
