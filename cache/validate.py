"""Validate a store opened for reading before anything is decoded: codecs,
dtypes and sizes in the allow-lists, then the schema (version, attributes,
required arrays, each array's shape, dtype and row chunking)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import zarr

from .attrs import MAX_ROWS, check_attrs
from .errors import StoreFormatError, UnsafeStoreError
from .names import NORMS, ROW_META, STATUS
from .schema import (
    ALLOWED_CODECS,
    ALLOWED_DTYPES,
    ARRAYS,
    PREFIX_KINDS,
    SCHEMA_VERSION,
    TOKEN_ARRAYS,
    ArraySpec,
    Geometry,
    parse_token_mode,
)

#: The largest chunk and file (shard) a reader decodes: 64x what a writer
#: makes by default (room for `--chunk-rows`), so a reader never allocates
#: more than this for one chunk.
MAX_CHUNK_BYTES = 2**30
MAX_SHARD_BYTES = 16 * 2**30


def stored_arrays(root: zarr.Group) -> list[str]:
    """Names of every array in the store, with group prefixes (`pooled/cls`)."""
    names = [name for name, _ in root.arrays()]
    for gname, group in root.groups():
        names.extend(f"{gname}/{name}" for name, _ in group.arrays())
    return sorted(names)


def _codec_names(codecs: Iterable[Any]) -> list[str]:
    names = []
    for codec in codecs:
        desc = codec.to_dict()
        names.append(desc["name"])
        inner = desc.get("configuration", {})
        for key in ("codecs", "index_codecs"):
            for sub in inner.get(key, []):
                names.append(sub["name"] if isinstance(sub, dict) else sub.to_dict()["name"])
    return names


def check_safe(root: zarr.Group) -> None:
    """Refuse codecs and dtypes outside the allow-list, before any decode."""
    for name, array in root.arrays():
        _check_array_safe(name, array)
    for gname, group in root.groups():
        for name, array in group.arrays():
            _check_array_safe(f"{gname}/{name}", array)


def _check_array_safe(name: str, array: zarr.Array) -> None:
    meta = array.metadata
    if getattr(meta, "zarr_format", 3) != 3:
        raise UnsafeStoreError(f"array {name!r} is Zarr v{meta.zarr_format}; only v3 is read")
    codecs = _codec_names(meta.codecs)
    bad = [c for c in codecs if c not in ALLOWED_CODECS]
    if bad:
        raise UnsafeStoreError(
            f"array {name!r} uses codec(s) {bad} outside the allow-list {sorted(ALLOWED_CODECS)}; "
            "refusing to decode it"
        )
    dtype = meta.data_type.to_json(zarr_format=3)
    dtype = dtype if isinstance(dtype, str) else dtype.get("name", str(dtype))
    if dtype not in ALLOWED_DTYPES:
        raise UnsafeStoreError(
            f"array {name!r} has dtype {dtype!r} outside {sorted(ALLOWED_DTYPES)}")
    _check_array_size(name, array)


def _check_array_size(name: str, array: zarr.Array) -> None:
    """Refuse shapes and chunks no vitreg store has, before anything is allocated
    for them: a reader sizes its buffers from these numbers."""
    itemsize = array.dtype.itemsize if array.dtype.kind in "biuf" else 8
    chunk = math.prod(array.chunks) * itemsize
    shard = math.prod(array.shards or array.chunks) * itemsize
    if array.ndim > 5 or (array.ndim and array.shape[0] > MAX_ROWS):
        raise UnsafeStoreError(
            f"array {name!r} has shape {array.shape}: more than {MAX_ROWS:,} rows or 5 "
            "dimensions, beyond any vitreg store; refusing to read it")
    if chunk > MAX_CHUNK_BYTES or shard > MAX_SHARD_BYTES:
        raise UnsafeStoreError(
            f"array {name!r} has chunks of {chunk:,} bytes (files of {shard:,}), more than "
            f"the {MAX_CHUNK_BYTES:,} ({MAX_SHARD_BYTES:,}) a reader allows; refusing to "
            "read it")


def check_schema(root: zarr.Group) -> None:
    """The store is a vitreg store of this major version with consistent shapes."""
    meta = root.attrs.get("vitreg")
    if not isinstance(meta, dict) or "schema_version" not in meta:
        raise StoreFormatError("not a vitreg store: the root group has no 'vitreg' attributes")
    major = str(meta["schema_version"]).split(".")[0]
    if major != SCHEMA_VERSION.split(".")[0]:
        raise StoreFormatError(
            f"store schema {meta['schema_version']} cannot be read by this vitreg "
            f"(schema {SCHEMA_VERSION}); install a matching vitreg version"
        )
    check_attrs(meta)
    geometry = geometry_from_attrs(meta)
    token_mode = meta.get("token_mode", "all")
    try:
        _, sample_k = parse_token_mode(token_mode)
    except (ValueError, AttributeError, TypeError) as exc:
        raise StoreFormatError(
            f"attribute 'token_mode' is {token_mode!r}, expected all, none or sampled:K"
        ) from exc
    names = stored_arrays(root)
    if not names and root.metadata.consolidated_metadata is None:
        raise StoreFormatError(
            "the store shows no arrays and carries no consolidated metadata: a server that "
            "lists no folders (a static web host, a CDN) needs it. Schema 1.3 writes it when a "
            "store completes; for an older store run `python -c \"import zarr; "
            "zarr.consolidate_metadata('STORE')\"` on the local copy and upload its zarr.json"
        )
    for required in (*ROW_META, NORMS):
        if required not in names:
            raise StoreFormatError(f"store lacks the required array {required!r}")
    n_rows, chunk_rows = root[STATUS].shape[0], root[STATUS].chunks[0]
    for name in names:
        spec = ARRAYS.get(name)
        if spec is not None:
            shape = (n_rows, *spec.row_shape(geometry, sample_k))
            _check_array_schema(name, root[name], spec, shape, chunk_rows)


def _check_array_schema(
    name: str, array: zarr.Array, spec: ArraySpec, shape: tuple[int, ...], chunk_rows: int
) -> None:
    """One array's shape, dtype and row chunking agree with the attributes and the contract."""
    if array.shape != shape:
        raise StoreFormatError(
            f"array {name!r} has shape {array.shape}, but the attributes say {shape}"
        )
    dtype = "string" if array.dtype.kind in "OTU" else str(array.dtype)
    allowed = ("float16", "float32") if name in TOKEN_ARRAYS else (spec.dtype,)
    if dtype not in allowed:
        raise StoreFormatError(f"array {name!r} has dtype {dtype}, expected {spec.dtype}")
    if array.chunks[0] != chunk_rows:
        raise StoreFormatError(
            f"array {name!r} has chunks of {array.chunks[0]} rows, 'status' of {chunk_rows}; "
            "every array must share the chunk rows"
        )


def _attr_int(meta: dict[str, Any], key: str, *, minimum: int = 0) -> int:
    """`meta[key]` as a non-negative int, or a StoreFormatError naming the key."""
    if key not in meta:
        raise StoreFormatError(f"the store's attributes lack {key!r} (a store from another "
                               "writer or version?)")
    value = meta[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise StoreFormatError(f"attribute {key!r} is {value!r}, expected an integer >= {minimum}")
    return value


def geometry_from_attrs(meta: dict[str, Any]) -> Geometry:
    """The token layout the attributes describe; StoreFormatError names a bad key."""
    grid = meta.get("grid")
    if not (isinstance(grid, list) and len(grid) == 2
            and all(isinstance(g, int) and not isinstance(g, bool) and g > 0 for g in grid)):
        raise StoreFormatError(f"attribute 'grid' is {grid!r}, expected two positive integers")
    registers = _attr_int(meta, "registers")
    prefix = _attr_int(meta, "prefix_tokens")
    layout = meta.get("prefix_layout") or ()  # schema 1.6; before: [CLS], then registers
    if not (isinstance(layout, (list, tuple)) and all(isinstance(k, str) for k in layout)):
        raise StoreFormatError(f"attribute 'prefix_layout' is {layout!r}, expected a list of "
                               f"{', '.join(PREFIX_KINDS)}")
    chosen = meta.get("blocks") or ()  # schema 1.6, `--blocks`
    if not (isinstance(chosen, (list, tuple)) and all(
            isinstance(b, int) and not isinstance(b, bool) and b >= 0 for b in chosen)):
        raise StoreFormatError(f"attribute 'blocks' is {chosen!r}, expected block indices")
    try:
        return Geometry(
            chosen=tuple(chosen), registers=registers, grid=(grid[0], grid[1]),
            dim=_attr_int(meta, "embed_dim", minimum=1), depth=_attr_int(meta, "depth", minimum=1),
            img_size=_attr_int(meta, "img_size", minimum=1), prefix=prefix, layout=tuple(layout),
        )
    except ValueError as exc:
        raise StoreFormatError(
            f"attributes 'prefix_tokens' ({prefix}), 'registers' ({registers}) and "
            f"'prefix_layout' ({layout!r}) disagree: {exc}") from exc
