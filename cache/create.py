"""Create a store: the chunk policy along `image`, the arrays with their
codecs, and the rows a writer writes at once."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import zarr
from zarr.codecs import Crc32cCodec

from .schema import SCHEMA_VERSION, ArraySpec, Geometry
from .urls import store_like
from .validate import stored_arrays

#: Target size of one `tokens` chunk. Rows of every array share the chunking
#: along `image`, so this fixes the chunk rows of the whole store
#: (see "Chunking" in cache_schema.md for the measurements behind it).
TOKENS_CHUNK_BYTES = 16 * 2**20
MIN_CHUNK_ROWS = 8
MAX_CHUNK_ROWS = 1024

#: No array is compressed (schema 1.1): float16 tokens and the float32 small
#: arrays compress 1.07-1.22x with zstd (cache_schema.md), while reading them
#: raw lets `cache.mapped` slice chunk files without zarr's per-chunk cost:
#: the small arrays read 1.5-10x faster per image. Strings get vlen-utf8.
#: Schema 1.3 appends zarr's `crc32c` codec to every array: a 4-byte checksum
#: after each chunk's bytes, which zarr (and xarray) verify on every decode,
#: `vitreg verify` checks chunk by chunk, and the memory maps skip.
COMPRESSORS: tuple = (Crc32cCodec(),)


def chunk_rows_for(row_bytes: int) -> int:
    """The largest power of two of rows whose chunk fits TOKENS_CHUNK_BYTES."""
    rows = 2 ** int(math.log2(max(1, TOKENS_CHUNK_BYTES // row_bytes)))
    return int(min(MAX_CHUNK_ROWS, max(MIN_CHUNK_ROWS, rows)))


def default_chunk_rows(geometry: Geometry) -> int:
    """Rows per chunk so that a float16 `tokens` chunk is about TOKENS_CHUNK_BYTES."""
    return chunk_rows_for(geometry.tokens * geometry.dim * 2)


def _fill_value(dtype: str) -> Any:
    return "" if dtype == "string" else 0


def create_store(url: str, *, overwrite: bool = False, **layout: Any) -> zarr.Group:
    """Create an empty store, all rows pending; `layout` is `ensure_store`'s
    keywords (geometry, n_rows, specs, attrs, chunk_rows, shard_rows,
    sample_k)."""
    zarr.open_group(store_like(url, "w"), mode="w" if overwrite else "w-", zarr_format=3)
    return ensure_store(url, **layout)


def ensure_store(
    url: str,
    *,
    geometry: Geometry,
    n_rows: int,
    specs: Iterable[ArraySpec],
    attrs: dict[str, Any],
    chunk_rows: int,
    shard_rows: int | None = None,
    sample_k: int = 0,
    check: Callable[[dict[str, Any]], None] | None = None,
) -> zarr.Group:
    """Open the store at `url`, creating whatever is missing.

    With `shard_rows` (a multiple of `chunk_rows`), every array is sharded:
    one file holds `shard_rows // chunk_rows` chunks along `image`.

    Idempotent, so that a creation cut short by a kill is finished by the
    next run, and so that several independent jobs may all call it at once:
    they write identical metadata and never delete anything. `check` sees the
    attributes of a store that already had them, before anything is added.
    """
    if n_rows < 1:
        raise ValueError("a store needs at least one row")
    # the files as they are, not a consolidated copy that may lag behind them
    root = zarr.open_group(store_like(url, "a"), mode="a", zarr_format=3,
                           use_consolidated=False)
    existing = root.attrs.get("vitreg")
    if existing is not None and check is not None:
        check(existing)
    if existing is None:
        root.attrs["vitreg"] = {**attrs, "schema_version": SCHEMA_VERSION, "complete": False}
    present = set(stored_arrays(root))
    for spec in specs:
        if spec.name not in present:
            create_array(root, spec, (n_rows, *spec.row_shape(geometry, sample_k)),
                         chunk_rows=chunk_rows, shard_rows=shard_rows)
    return root


def create_array(root: zarr.Group, spec: ArraySpec, shape: tuple[int, ...], *,
                 chunk_rows: int, shard_rows: int | None) -> None:
    """One array of a store, unless another job created it a moment ago."""
    # A zero-size axis (no registers) still gets a chunk of 1:
    # zero-size chunks confuse readers.
    rest = tuple(max(1, s) for s in shape[1:])
    try:
        root.create_array(
            spec.name,
            shape=shape,
            chunks=(chunk_rows, *rest),
            shards=(shard_rows, *rest) if shard_rows and shard_rows != chunk_rows else None,
            dtype=str if spec.dtype == "string" else spec.dtype,
            compressors=COMPRESSORS,
            fill_value=_fill_value(spec.dtype),
            dimension_names=spec.dims,
        )
    except zarr.errors.ContainsArrayError:
        pass  # another job created it a moment ago


def write_rows(array: zarr.Array) -> int:
    """Rows of one file along `image`: the shard's, else the chunk's. A writer
    writes whole files only (two writers of one shard lose chunks)."""
    return int((array.shards or array.chunks)[0])
