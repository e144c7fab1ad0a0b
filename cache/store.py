"""Create, open and validate vitreg stores: the only code that knows Zarr paths."""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import zarr
import zarr.storage
from zarr.codecs import Crc32cCodec

from vitreg.core.errors import VitregError

from .attrs import MAX_ROWS, check_attrs
from .errors import StoreFormatError, StoreNotFoundError, UnsafeStoreError
from .guard import GuardedStore, guard_root
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

#: Target size of one `tokens` chunk. Rows of every array share the chunking
#: along `image`, so this fixes the chunk rows of the whole store
#: (see "Chunking" in cache_schema.md for the measurements behind it).
TOKENS_CHUNK_BYTES = 16 * 2**20
#: The largest chunk and file (shard) a reader decodes: 64x what a writer
#: makes by default (room for `--chunk-rows`), so a reader never allocates
#: more than this for one chunk.
MAX_CHUNK_BYTES = 2**30
MAX_SHARD_BYTES = 16 * 2**30
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
        if spec.name in present:
            continue
        row_shape = spec.row_shape(geometry, sample_k)
        # A zero-size axis (no registers) still gets a chunk of 1:
        # zero-size chunks confuse readers.
        rest = tuple(max(1, s) for s in row_shape)
        try:
            root.create_array(
                spec.name,
                shape=(n_rows, *row_shape),
                chunks=(chunk_rows, *rest),
                shards=(shard_rows, *rest) if shard_rows and shard_rows != chunk_rows else None,
                dtype=str if spec.dtype == "string" else spec.dtype,
                compressors=COMPRESSORS,
                fill_value=_fill_value(spec.dtype),
                dimension_names=spec.dims,
            )
        except zarr.errors.ContainsArrayError:
            pass  # another job created it a moment ago
    return root


def write_rows(array: zarr.Array) -> int:
    """Rows of one file along `image`: the shard's, else the chunk's. A writer
    writes whole files only (two writers of one shard lose chunks)."""
    return int((array.shards or array.chunks)[0])


def not_found_message(url: str) -> str:
    """Why no store opened at `url`: nothing there, or something that is not Zarr v3."""
    if "://" not in url and not os.path.exists(url):
        return f"no such file or folder: {url!r} (check the path)"
    return f"no Zarr v3 store at {url!r} (vitreg writes Zarr v3; a v2 store is refused)"


def open_group(url: str, *, mode: str = "r") -> zarr.Group:
    """Open the root group of a store after checking it is safe to decode."""
    try:
        target = guarded(url) if mode == "r" else store_like(url, mode)
        root = zarr.open_group(target, mode=mode, zarr_format=3,
                               use_consolidated=None if mode == "r" else False)
    except VitregError:
        raise
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
        if mode == "r" and _has_root_metadata(url):
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


def guarded(url: str) -> GuardedStore:
    """The zarr store zarr would open for reading `url`, inside a `GuardedStore`."""
    from zarr.core.sync import sync
    from zarr.storage._common import make_store_path

    return GuardedStore(sync(make_store_path(store_like(url, "r"), mode="r")).store, where=url)


def _has_root_metadata(url: str) -> bool:
    """Whether a `zarr.json` is there at all (so that zarr's "no group" means
    "unreadable metadata"); False when even that cannot be asked."""
    from zarr.core.sync import sync
    from zarr.storage._common import make_store_path

    try:
        path = sync(make_store_path(store_like(url, "r"), mode="r"))
        return bool(sync((path / "zarr.json").exists()))
    except Exception:  # noqa: BLE001 (any failure means: cannot tell)
        return False


def store_like(url: str, mode: str) -> Any:
    """A path or URL as zarr takes it. `file://` URLs become local paths (zarr's
    LocalStore makes folders and writes atomically; fsspec's local one does
    neither); a `.zip` from `vitreg pack` opens in place, local or remote."""
    url = str(url)
    if url.startswith("file://"):
        return url.removeprefix("file://")
    if url.endswith(".zip") and mode == "r" and "://" in url:
        return remote_zip(url)
    if url.endswith(".zip") and mode == "r":
        if not Path(url).is_file():
            raise FileNotFoundError(url)
        try:
            with zipfile.ZipFile(url) as zf:
                check_zip_members(zf, url)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
            raise UnsafeStoreError(f"{url} is not a readable zip ({exc}): cut short or not a "
                                   "zip; copy it again, or pack the store again") from exc
        return zarr.storage.ZipStore(url, mode="r")
    return url


#: Members a zip store may have: a store of 10^9 rows in 16 MiB chunks has fewer.
MAX_ZIP_MEMBERS = 10**7


def check_zip_members(zf: zipfile.ZipFile, url: str) -> None:
    """Refuse a zip whose members are compressed (a deflated member may inflate
    without bound; `vitreg pack` stores them) or claim another size than they hold."""
    members = zf.infolist()
    if len(members) > MAX_ZIP_MEMBERS:
        raise UnsafeStoreError(f"{url}: {len(members):,} zip members, more than any store "
                               "has; refusing to read it")
    for info in members:
        if info.compress_type != zipfile.ZIP_STORED:
            raise UnsafeStoreError(
                f"{url}: zip member {info.filename} is compressed; `vitreg pack` stores members "
                "uncompressed and a reader refuses compressed ones (a member could inflate "
                "without bound): repack the folder with `vitreg pack`")
        if info.file_size != info.compress_size:
            raise UnsafeStoreError(f"{url}: zip member {info.filename} claims {info.file_size} "
                                   f"bytes but holds {info.compress_size}; refusing to read it")


def remote_zip(url: str) -> zarr.storage.FsspecStore:
    """A zip at an http(s) or s3 URL, read in place: fsspec reads its central
    directory, then each member, with range requests (members are stored)."""
    import fsspec
    from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper

    fs = fsspec.filesystem("zip", fo=url)
    check_zip_members(fs.zip, url)
    return zarr.storage.FsspecStore(AsyncFileSystemWrapper(fs, asynchronous=True), path="",
                                    read_only=True)


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
    for required in ("key", "label", "status", "error", "norms"):
        if required not in names:
            raise StoreFormatError(f"store lacks the required array {required!r}")
    n_rows, chunk_rows = root["status"].shape[0], root["status"].chunks[0]
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


def stored_arrays(root: zarr.Group) -> list[str]:
    """Names of every array in the store, with group prefixes (`pooled/cls`)."""
    names = [name for name, _ in root.arrays()]
    for gname, group in root.groups():
        names.extend(f"{gname}/{name}" for name, _ in group.arrays())
    return sorted(names)


#: Root attributes the geometry is read from, and how each must look.
_GEOMETRY_KEYS = ("registers", "grid", "embed_dim", "depth", "img_size", "prefix_tokens")


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


def remove_partials(url: str) -> list[str]:
    """Delete the `.partial` files a killed local write left behind; return them.

    zarr's LocalStore writes each chunk to `<name>.<uuid>.partial`, then
    renames it, so a kill leaves at most such orphans, never half a chunk.
    """
    root = Path(url.removeprefix("file://"))
    if "://" in url.removeprefix("file://") or not root.is_dir():
        return []
    leftovers = sorted(root.rglob("*.partial"))
    for path in leftovers:
        path.unlink(missing_ok=True)
    return [str(p) for p in leftovers]


def is_vitreg_store(path: Path) -> bool:
    """A folder whose root group carries vitreg's attributes, or a bare Zarr
    group that a creation cut short (or another job starting the same store
    a moment ago) left: `zarr.json` with no attributes and nothing else."""
    try:
        meta = json.loads((path / "zarr.json").read_text())
        attrs = meta.get("attributes") or {}
        if "vitreg" in attrs:
            return True
        return meta.get("node_type") == "group" and not attrs and \
            [p.name for p in path.iterdir()] == ["zarr.json"]
    except (OSError, ValueError, AttributeError):
        return False


def check_out(url: str, *, overwrite: bool) -> None:
    """Refuse an `--out` that cannot become a store, before any work is done.

    Only a vitreg store (recognised by its root attributes) may be resumed
    or, with `overwrite`, deleted: a folder of the user's files never is.
    """
    local = url.removeprefix("file://")
    if not local.strip():
        raise StoreFormatError("--out is empty; give the path of the store to write")
    if "://" in local:
        return  # a remote store: fsspec decides
    path = Path(local)
    if path.exists() and not path.is_dir():
        raise StoreFormatError(f"--out {url} is a file, not a store folder; choose a new path")
    if path.is_dir() and any(path.iterdir()) and not is_vitreg_store(path):
        found = sorted(p.name for p in path.iterdir())
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise StoreFormatError(
            f"--out {url} is a folder that is not a vitreg store (it holds {shown}); "
            "vitreg never writes into or deletes such a folder: choose a new or empty path")
    parent = path if path.is_dir() else next((p for p in path.parents if p.exists()), Path("."))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StoreFormatError(f"--out {url}: no permission to write in {parent}; "
                               "choose a writable path")


def delete_store(url: str) -> None:
    """Delete a vitreg store (and nothing else) so that it can be rewritten."""
    local = url.removeprefix("file://")
    if "://" in local:
        try:
            found = zarr.open_group(store_like(url, "r"), mode="r", zarr_format=3)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError):
            return
        if "vitreg" not in found.attrs:
            raise StoreFormatError(
                f"--overwrite: {url} is not a vitreg store; refusing to delete it")
        zarr.open_group(store_like(url, "w"), mode="w", zarr_format=3)
        return
    path = Path(local)
    if not path.exists():
        return
    if not is_vitreg_store(path):
        raise StoreFormatError(f"--overwrite: {url} is not a vitreg store; refusing to delete it")
    if path.is_symlink():  # empty the store the link points to; keep the link
        for child in path.resolve().iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        return
    shutil.rmtree(path)
