"""What a store opened for reading may hand to zarr: every chunk it touches checked.

`GuardedStore` wraps the zarr store of a store opened for reading (a local
folder, a zip, HTTP, S3) and checks each chunk on its way to zarr's decoder:

- a complete store has every chunk, so a missing one (a deleted file, an
  HTTP 404, a shard index entry marked empty) raises `MissingChunkError`
  instead of reading as zeros; so does a chunk of the wrong size;
- a compressed chunk may not decode to more bytes than the array's metadata
  says a chunk holds: gzip is inflated in 1 MiB steps and counted (never
  held), blosc and zstd headers state their decoded size;
- a local store's files are read only inside its folder (a symlink that
  leads out of it is refused);
- any other failure to fetch bytes (HTTP 500, a cut connection, a wrong
  Content-Length, a permission) becomes `StoreReadError`, a sentence.

Metadata (`zarr.json`) passes unchecked: zarr asks for some that may not exist.
"""

from __future__ import annotations

import os
import stat
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
import zarr.storage
from zarr.abc.store import ByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.codecs import ShardingCodec
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import WrapperStore

from vitreg.core.errors import VitregError
from vitreg.core.scrub import redact

from .errors import MissingChunkError, StoreReadError, UnsafeStoreError
from .validate import stored_arrays

CHECKSUM_BYTES = 4
#: An empty entry of a shard index: the chunk is not stored.
EMPTY = 2**64 - 1
#: Decoded bytes allowed per string (vlen-utf8) element, plus a fixed 1 MiB:
#: keys and error texts are far shorter, and a chunk has at most 1024 rows.
STRING_BYTES = 4096
#: gzip output is counted in pieces of this size, so checking a chunk never
#: holds more than this of it.
INFLATE_STEP = 2**20


@dataclass(frozen=True)
class ChunkRule:
    """What one stored chunk of an array must look like."""

    stored: int | None  # exact bytes of a raw fixed-size chunk (checksum included), else None
    decoded: int  # most bytes a chunk may decode to
    compressor: str | None  # gzip, zstd or blosc inside the chunk, else None
    checksum: bool  # a crc32c trails the chunk
    per_file: int  # chunks per file (a shard's), 1 if not sharded
    strings: bool  # vlen-utf8: the chunk starts with its element count
    shape: tuple[int, ...] = ()  # the array's
    chunks: tuple[int, ...] = ()
    per_axis: tuple[int, ...] = ()  # chunks per shard along each axis

    def stored_inner(self, key: str, i: int) -> bool:
        """Whether chunk `i` of the shard at `key` lies inside the array (the
        last shard's chunks past the array's end are never written)."""
        shard = [int(c) for c in key.rsplit("/c/", 1)[-1].split("/")]
        inner = np.unravel_index(i, self.per_axis)
        return all((s * n + j) * c < size for s, n, j, c, size in
                   zip(shard, self.per_axis, inner, self.chunks, self.shape))


def chunk_rule(array: zarr.Array) -> ChunkRule:
    """The rule for `array`'s chunks, from its metadata alone."""
    codecs = list(array.metadata.codecs)
    per_file = 1
    if len(codecs) == 1 and isinstance(codecs[0], ShardingCodec):
        per_file = int(np.prod(array.shards)) // int(np.prod(array.chunks))
        codecs = list(codecs[0].codecs)
    names = [c.to_dict()["name"] for c in codecs]
    elements = int(np.prod(array.chunks))
    strings = array.dtype.kind not in "biuf"
    decoded = elements * STRING_BYTES + 2**20 if strings else elements * array.dtype.itemsize
    compressor = next((n for n in names if n in ("gzip", "zstd", "blosc")), None)
    checksum = "crc32c" in names
    raw = not strings and compressor is None
    stored = decoded + CHECKSUM_BYTES * checksum if raw else None
    per_axis = tuple(s // c for s, c in zip(array.shards or array.chunks, array.chunks))
    return ChunkRule(stored=stored, decoded=decoded, compressor=compressor, checksum=checksum,
                     per_file=per_file, strings=strings, shape=tuple(array.shape),
                     chunks=tuple(array.chunks), per_axis=per_axis)


class GuardedStore(WrapperStore):
    """A read-only zarr store whose chunk reads are checked (see the module)."""

    def __init__(self, store: zarr.abc.store.Store, *, where: str = "") -> None:
        super().__init__(store)
        self.where = redact(where)
        #: set once the attributes are read: a complete store has every chunk
        self.complete = False
        #: chunk rules by array path (`tokens`, `pooled/cls`)
        self.rules: dict[str, ChunkRule] = {}
        self._root = (os.path.realpath(store.root)
                      if isinstance(store, zarr.storage.LocalStore) else None)
        self._folders: dict[str, bool] = {}  # folders of the store known to lie inside it

    def _with_store(self, store: zarr.abc.store.Store) -> GuardedStore:
        new = type(self)(store, where=self.where)
        new.complete, new.rules = self.complete, self.rules
        return new

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GuardedStore) and self._store == other._store

    __hash__ = None  # type: ignore[assignment]

    def __str__(self) -> str:  # zarr logs it: the location without credentials
        return f"guarded-{self.where}"

    __repr__ = __str__

    async def get(self, key: str, prototype: BufferPrototype,
                  byte_range: ByteRequest | None = None) -> Buffer | None:
        try:
            if self._root is not None:
                inside(self._root, key, self.where, self._folders)
            buffer = await self._store.get(key, prototype, byte_range)
        except VitregError:
            raise
        except Exception as exc:  # noqa: BLE001 (aiohttp, botocore, OSError: all one sentence)
            advice = ("check the file (its permissions, links, the disk)" if self._root else
                      "check the URL, the network and the server")
            raise StoreReadError(
                f"{self.where}: cannot read {key} ({type(exc).__name__}: {redact(exc)}); "
                f"{advice}, then run the command again") from exc
        if key == "zarr.json" or key.endswith("/zarr.json"):
            return buffer
        if buffer is None:
            if self.complete:
                raise MissingChunkError(missing(self.where, key))
            return None
        rule = self.rules.get(array_path(key))
        if rule is not None:
            check_bytes(self, key, buffer.as_numpy_array(), byte_range, rule)
        return buffer

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]


def missing(where: str, key: str) -> str:
    """The sentence for a chunk a complete store lacks."""
    return (f"{where}: chunk {key} is missing from a complete store (zarr would read it as "
            f"zeros); the copy is damaged or incomplete: run `vitreg verify {where}` to list "
            "every damaged chunk, then copy or download the store again")


def damaged(where: str, key: str, why: str) -> str:
    return (f"{where}: chunk {key} {why}; the store is damaged: run `vitreg verify {where}` to "
            "list every damaged chunk, then copy or download the store again")


def array_path(key: str) -> str:
    """`pooled/cls/c/0/0` -> `pooled/cls` (zarr v3's default chunk key encoding)."""
    return key.rsplit("/c/", 1)[0] if "/c/" in key else key.rsplit("/c", 1)[0]


def inside(root: str, key: str, where: str, seen: dict[str, bool] | None = None
           ) -> os.stat_result | None:
    """Refuse a key whose file, links resolved, lies outside the store's folder;
    return the file's `stat` (None: no such file).

    One `lstat` of the file per call; its folder is resolved once per `seen`
    (a cache the caller keeps), so the check costs no `realpath` per read.
    """
    path = os.path.join(root, key.lstrip("/"))
    folder = os.path.dirname(path)
    ok = None if seen is None else seen.get(folder)
    if ok is None:
        ok = within(root, folder)
        if seen is not None:
            seen[folder] = ok
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        info = None
    if ok and (info is None or not stat.S_ISLNK(info.st_mode)):
        return info
    real = os.path.realpath(path)
    if not within(root, real):
        raise UnsafeStoreError(
            f"{where}: {key} is a symbolic link to {real}, outside the store; vitreg reads "
            "only files inside a store (copy the file in instead of linking it)")
    return os.stat(path) if info is not None else None


def within(root: str, path: str) -> bool:
    real = os.path.realpath(path)
    return real == root or real.startswith(root + os.sep)


def check_bytes(guard: GuardedStore, key: str, data: np.ndarray,
                byte_range: ByteRequest | None, rule: ChunkRule) -> None:
    """Check what the store returned for `key`: a chunk, a shard, or part of one."""
    if rule.per_file == 1:
        if byte_range is None:
            check_chunk(guard.where, key, data, rule)
        return
    index_bytes = 16 * rule.per_file + CHECKSUM_BYTES
    if isinstance(byte_range, SuffixByteRequest) and byte_range.suffix == index_bytes:
        check_index(guard, key, data, rule)
    elif isinstance(byte_range, RangeByteRequest):
        check_chunk(guard.where, f"{key} [{byte_range.start}:{byte_range.end}]", data, rule)
    elif byte_range is None:  # a whole shard: its index, then each chunk it points at
        if len(data) < index_bytes:
            raise MissingChunkError(damaged(guard.where, key, f"is {len(data)} bytes, shorter "
                                                              "than its shard index"))
        for offset, nbytes in check_index(guard, key, data[-index_bytes:], rule):
            if offset + nbytes > len(data) - index_bytes:
                raise MissingChunkError(damaged(guard.where, key, "points past its end"))
            check_chunk(guard.where, f"{key} [{offset}:{offset + nbytes}]",
                        data[offset:offset + nbytes], rule)


def check_index(guard: GuardedStore, key: str, data: np.ndarray,
                rule: ChunkRule) -> list[tuple[int, int]]:
    """The stored (offset, nbytes) of each chunk of a shard; an empty entry of
    a complete store, or an entry of the wrong size, is refused."""
    if len(data) != 16 * rule.per_file + CHECKSUM_BYTES:
        raise MissingChunkError(damaged(guard.where, key, "has a truncated shard index"))
    index = np.frombuffer(data[:-CHECKSUM_BYTES].tobytes(), dtype="<u8").reshape(-1, 2)
    entries = []
    for i, (offset, nbytes) in enumerate(index.tolist()):
        if offset == nbytes == EMPTY:
            if guard.complete and rule.stored_inner(key, i):
                raise MissingChunkError(missing(guard.where, f"{key} (its chunk {i})"))
            continue
        if rule.stored is not None and nbytes != rule.stored:
            raise MissingChunkError(damaged(
                guard.where, key, f"says its chunk {i} is {nbytes} bytes, expected {rule.stored}"))
        entries.append((offset, nbytes))
    return entries


def check_chunk(where: str, key: str, data: np.ndarray, rule: ChunkRule) -> None:
    """One stored chunk: its size if raw, its decoded size if compressed."""
    if rule.stored is not None:
        if len(data) != rule.stored:
            raise MissingChunkError(damaged(
                where, key, f"is {len(data)} bytes, expected {rule.stored} (truncated?)"))
        return
    payload = data[:-CHECKSUM_BYTES] if rule.checksum else data
    if rule.compressor is not None:
        size = decoded_size(rule.compressor, payload.tobytes(), rule.decoded)
        if size > rule.decoded:
            raise UnsafeStoreError(
                f"{where}: chunk {key} decodes to more than {rule.decoded} bytes, the most a "
                f"chunk of its array holds ({rule.compressor}); refusing to decode it")
    elif rule.strings and len(payload) >= 4:
        count = int.from_bytes(payload[:4].tobytes(), "little")
        if count > rule.decoded // 4:
            raise UnsafeStoreError(f"{where}: chunk {key} claims {count} strings, more than "
                                   "a chunk of its array holds; refusing to decode it")


def decoded_size(compressor: str, data: bytes, limit: int) -> int:
    """Bytes `data` decodes to, counted up to just past `limit` (never held whole)."""
    if compressor == "blosc":
        return int.from_bytes(data[4:8], "little") if len(data) >= 16 else limit + 1
    if compressor == "zstd":
        return zstd_content_size(data, limit)
    total, rest = 0, data
    while rest and total <= limit:
        inflater = zlib.decompressobj(32 + zlib.MAX_WBITS)  # gzip or zlib header
        try:
            while rest and not inflater.eof and total <= limit:
                total += len(inflater.decompress(rest, INFLATE_STEP))
                rest = inflater.unconsumed_tail
        except zlib.error:
            return total  # not gzip after all: zarr's decoder says so
        rest = inflater.unused_data  # the next gzip member, if any
    return total


def zstd_content_size(data: bytes, limit: int) -> int:
    """The decoded size a zstd frame's header states; past `limit` when it states none."""
    if len(data) < 6 or data[:4] != b"\x28\xb5\x2f\xfd":
        return 0  # not a zstd frame: zarr's decoder says so
    descriptor = data[4]
    fcs_flag, single = descriptor >> 6, (descriptor >> 5) & 1
    at = 5 + (0 if single else 1) + (0, 1, 2, 4)[descriptor & 3]
    width = (1 if single else 0, 2, 4, 8)[fcs_flag]
    if width == 0 or len(data) < at + width:
        return limit + 1  # unknown size: the decoder would grow its buffer without bound
    size = int.from_bytes(data[at:at + width], "little")
    return size + 256 if width == 2 else size


def unwrap(store: zarr.abc.store.Store) -> zarr.abc.store.Store:
    """The store under a GuardedStore (what `verify` reads: it reports missing chunks)."""
    return store._store if isinstance(store, GuardedStore) else store


def guard_root(root: zarr.Group) -> None:
    """Arm the guard of a root opened for reading: chunk rules of every array and,
    for a complete store, missing chunks as errors."""
    guard = root.store
    if not isinstance(guard, GuardedStore):
        return
    guard.rules = {name: chunk_rule(root[name]) for name in stored_arrays(root)}
    guard.complete = root.attrs["vitreg"].get("complete") is True


def local_root(store: zarr.abc.store.Store) -> Path | None:
    """The folder of a local store (wrapped or not), else None."""
    store = unwrap(store)
    return Path(store.root) if isinstance(store, zarr.storage.LocalStore) else None
