"""The vitreg store: create, open, validate, write and read. The only code
that knows Zarr paths; `extract`, `probe` and `analysis` go through it.

Reading hands out no zarr object: `Store.array` returns a `StoreArray`, and
array names are the constants of `cache.names` (`names.POOLED_CLS`)."""

from __future__ import annotations

from . import names
from .arrays import StoreArray
from .errors import (
    ConfigMismatchError,
    IncompleteStoreError,
    StoreFormatError,
    StoreNotFoundError,
    UnsafeStoreError,
    VitregError,
)
from .names import ROW_META
from .reader import OUTLIER_PERCENTILE, Store, mark_complete, open_store, outlier_threshold
from .schema import ARRAYS, SCHEMA_VERSION, WITH_OPTIONS, ArraySpec, Geometry, arrays_for
from .store import (
    create_store,
    default_chunk_rows,
    ensure_store,
    stored_arrays,
    update_attrs,
)
from .writer import STATUS_FAILED, STATUS_OK, STATUS_PENDING, ChunkWriter

__all__ = [
    "ARRAYS", "OUTLIER_PERCENTILE", "ROW_META", "SCHEMA_VERSION", "STATUS_FAILED", "STATUS_OK",
    "STATUS_PENDING", "WITH_OPTIONS", "ArraySpec", "ChunkWriter", "ConfigMismatchError",
    "Geometry", "IncompleteStoreError", "Store", "StoreArray", "StoreFormatError",
    "StoreNotFoundError", "UnsafeStoreError", "VitregError", "arrays_for", "create_store",
    "default_chunk_rows", "ensure_store", "mark_complete", "names", "open_store",
    "outlier_threshold", "stored_arrays", "update_attrs",
]
