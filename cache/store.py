"""Open a store's root group, checked (`cache.validate`) and guarded
(`cache.guard`), and update its attributes. The rest of what a store is made
of lives by job: `cache.urls` (where a store lives), `cache.create`,
`cache.validate` and `cache.delete`; their names are re-exported here."""

from __future__ import annotations

import json
import warnings
from typing import Any

import zarr

from vitreg.core.errors import VitregError

from .create import (
    COMPRESSORS,
    MAX_CHUNK_ROWS,
    MIN_CHUNK_ROWS,
    TOKENS_CHUNK_BYTES,
    chunk_rows_for,
    create_store,
    default_chunk_rows,
    ensure_store,
    write_rows,
)
from .delete import check_out, delete_store, is_vitreg_store, remove_partials
from .errors import StoreNotFoundError, UnsafeStoreError
from .guard import guard_root
from .urls import guarded, has_root_metadata, not_found_message, store_like
from .validate import (
    MAX_CHUNK_BYTES,
    MAX_SHARD_BYTES,
    check_safe,
    check_schema,
    geometry_from_attrs,
    stored_arrays,
)

__all__ = [
    "COMPRESSORS", "MAX_CHUNK_BYTES", "MAX_CHUNK_ROWS", "MAX_SHARD_BYTES", "MIN_CHUNK_ROWS",
    "TOKENS_CHUNK_BYTES", "check_out", "check_safe", "check_schema", "chunk_rows_for",
    "consolidate", "create_store", "default_chunk_rows", "delete_store", "ensure_store",
    "geometry_from_attrs", "guarded", "is_vitreg_store", "open_group", "remove_partials",
    "store_like", "stored_arrays", "update_attrs", "write_rows",
]


def open_group(url: str, *, mode: str = "r") -> zarr.Group:
    """Open the root group of a store after checking it is safe to decode."""
    try:
        target = guarded(url) if mode == "r" else store_like(url, mode)
        root = zarr.open_group(target, mode=mode, zarr_format=3,
                               use_consolidated=None if mode == "r" else False)
    except VitregError:
        raise
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
        if mode == "r" and has_root_metadata(url):
            # zarr reports metadata it cannot parse (a field missing) as "no group"
            raise UnsafeStoreError(
                f"{url}: its zarr.json is not Zarr v3 group metadata zarr can read (a field of "
                "the group or of an array in it is missing or malformed); refusing to decode it"
            ) from exc
        raise StoreNotFoundError(not_found_message(url)) from exc
    except ImportError as exc:
        raise StoreNotFoundError(
            f"cannot open {url!r}: {exc} (S3 URLs need `pip install 'vitreg[s3]'`)"
        ) from exc
    except (ValueError, TypeError, KeyError, json.JSONDecodeError,
            zarr.errors.BaseZarrError) as exc:
        # a truncated zarr.json, or consolidated metadata naming an unknown codec or dtype
        raise UnsafeStoreError(f"{url}: metadata zarr cannot parse ({type(exc).__name__}: "
                               f"{exc}); refusing to decode it") from exc
    try:
        check_safe(root)
    except VitregError:
        raise
    except (zarr.errors.BaseZarrError, ValueError, TypeError, KeyError) as exc:
        # zarr could not even parse some metadata (unknown codec or dtype, truncated json)
        raise UnsafeStoreError(
            f"{url}: {type(exc).__name__}: {exc}; refusing to decode it"
        ) from exc
    except OSError as exc:
        raise StoreNotFoundError(
            f"{url}: cannot list the store's arrays ({exc}); a store served without folder "
            "listings must carry consolidated metadata (schema 1.3, written when it completes)"
        ) from exc
    check_schema(root)
    guard_root(root)
    return root


def update_attrs(root: zarr.Group, **changes: Any) -> None:
    """Merge `changes` into the store's `vitreg` attributes (one atomic write);
    a complete store's consolidated metadata is written again after it."""
    meta = dict(root.attrs["vitreg"])
    meta.update(changes)
    root.attrs["vitreg"] = meta
    if meta.get("complete"):
        consolidate(root)


def consolidate(root: zarr.Group) -> None:
    """Write zarr's consolidated metadata into the root `zarr.json`, so that a
    reader opens every array from that one file, with no folder listing (a
    static web server or object store lists nothing)."""
    with warnings.catch_warnings():
        # zarr warns that consolidated metadata is not yet in the v3 spec;
        # zarr-python and xarray read it, and readers without it still list.
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        zarr.consolidate_metadata(root.store, path=root.path or None, zarr_format=3)
