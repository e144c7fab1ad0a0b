"""Whole chunk and shard files of an uncompressed array, encoded the way zarr
encodes them and written with one `writev`: no copy of the rows.

zarr's own write of a shard copies every chunk at least three times (the
chunk buffer, the `crc32c` codec's `np.append`, the shard's `combine`) and
holds the GIL for most of it; `bench/bench_writer.py` measured it at about
half the speed of a plain `write()` of the same bytes. Our arrays are all
uncompressed (schema 1.1) with zarr's `crc32c` codec (schema 1.3), so a
file is simply (zarr v3 spec, `bytes`, `crc32c` and `sharding_indexed`):

- unsharded: the chunk's little-endian C-order bytes, then their crc32c
  (4 bytes, little-endian);
- sharded (index at the end): each chunk encoded as above, in order along
  `image` (the other axes are one chunk, so zarr's Morton order is that
  order), then the index, an (offset, nbytes) uint64 pair per chunk
  (2**64-1 twice for a chunk not stored), then the index's crc32c.

The last chunk of an array is stored whole, its rows past the end filled with
the fill value, as zarr stores it. String arrays (`vlen-utf8`, then
`crc32c`) are encoded per chunk by numcodecs, as zarr's codec does, and
written a file at a time (zarr's own write of 256 keys took 3-13 ms, as
long as 40-130 MB of tokens). Any other array (a compressor,
chunks across a second axis, a remote store) goes through zarr unchanged
(`file_layout` returns None). `tests/test_cache/test_shardfile.py` checks
the files are byte for byte those zarr writes.

The checksum is `crc32c` (ICRAR's package, a dependency), which releases
the GIL on any buffer, else `google_crc32c` (zarr's own dependency), which
releases it only for `bytes` of 1 MiB or more, so not on our NumPy views.
A chunk is hashed and written a slice at a time (`SLICE_BYTES`): the
kernel's copy into the page cache then reads the rows from the core's cache,
so they come from memory once, as in a plain `write()`.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
import zarr.storage
from numcodecs.vlen import VLenUTF8
from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec, VLenUTF8Codec
from zarr.codecs.sharding import ShardingCodecIndexLocation

try:  # ICRAR's crc32c releases the GIL while it hashes
    from crc32c import crc32c as _icrar_crc32c

    def _crc32c_extend(crc: int, data) -> int:
        return _icrar_crc32c(data, crc)

    CRC32C_MODULE = "crc32c"
except ImportError:  # zarr's dependency; same values, holds the GIL on NumPy views
    from google_crc32c import extend as _crc32c_extend

    CRC32C_MODULE = "google_crc32c"

EMPTY = 2**64 - 1
#: at most this many buffers per writev call (Linux's IOV_MAX is 1024)
IOV_MAX = 1024
#: a chunk is hashed and written this many bytes at a time, so that the
#: kernel's copy into the page cache reads from the core's cache what the
#: checksum has just read from memory (a core's L2 here is 1 MiB)
SLICE_BYTES = 512 * 1024


def crc32c(data) -> bytes:
    """The 4 bytes zarr's `crc32c` codec appends: little-endian CRC-32C."""
    return int(_crc32c_extend(0, data)).to_bytes(4, "little")


@dataclass(frozen=True)
class FileLayout:
    """How the files of one array are encoded, for the arrays `file_layout` accepts."""

    array: zarr.Array
    directory: Path
    dtype: np.dtype  # little-endian
    chunk_rows: int
    per_file: int  # chunks along `image` per file (1: not sharded)
    checksum: bool  # chunks end with a crc32c
    sharded: bool
    strings: bool = False  # vlen-utf8 chunks (of varying size), else fixed-size bytes

    @property
    def file_rows(self) -> int:
        return self.chunk_rows * self.per_file

    def path(self, file_index: int) -> Path:
        coords = (file_index,) + (0,) * (len(self.array.shape) - 1)
        return self.directory / self.array.metadata.encode_chunk_key(coords)


def file_layout(array: zarr.Array) -> FileLayout | None:
    """The layout of `array`'s files when this module can write them, else None."""
    if not isinstance(array.store, zarr.storage.LocalStore) or array.metadata.zarr_format != 3:
        return None
    codecs = array.metadata.codecs
    sharded = len(codecs) == 1 and isinstance(codecs[0], ShardingCodec)
    if sharded:
        sharding = codecs[0]
        if (sharding.index_location != ShardingCodecIndexLocation.end
                or _codec_kinds(sharding.index_codecs) != [BytesCodec, Crc32cCodec]
                or _endian(sharding.index_codecs[0]) != "little"
                or tuple(array.shards[1:]) != tuple(array.chunks[1:])):
            return None
        codecs = sharding.codecs
    kinds = _codec_kinds(codecs)
    shape, chunks = tuple(array.shape), tuple(array.chunks)
    if chunks[1:] != shape[1:] or 0 in shape:
        return None
    per_file = (array.shards or chunks)[0] // chunks[0]
    if kinds in ([VLenUTF8Codec], [VLenUTF8Codec, Crc32cCodec]) and len(shape) == 1 \
            and array.dtype.kind in "OT" and array.fill_value == "":
        return FileLayout(array, Path(array.store.root, array.path), np.dtype(object),
                          chunks[0], per_file, checksum=len(kinds) == 2, sharded=sharded,
                          strings=True)
    if kinds not in ([BytesCodec], [BytesCodec, Crc32cCodec]) or _endian(codecs[0]) != "little":
        return None
    if array.dtype.kind not in "biuf" or not _zero_fill(array):
        return None
    return FileLayout(array, Path(array.store.root, array.path),
                      array.dtype.newbyteorder("<"), chunks[0], per_file,
                      checksum=len(kinds) == 2, sharded=sharded)


def _codec_kinds(codecs) -> list[type]:
    return [type(c) for c in codecs]


def _endian(codec: BytesCodec) -> str:
    return codec.endian.value if codec.endian is not None else "little"


def _zero_fill(array: zarr.Array) -> bool:
    """The padding of an edge chunk is written as zeros: only for a zero fill value."""
    return bool(np.asarray(array.fill_value) == 0)


class OpenFile:
    """One file of an array (a shard, or a chunk) being written chunk by chunk.

    Uncompressed chunks have a fixed size, so chunk i of a shard starts at
    i * (chunk bytes + 4) whatever order the chunks come in: each is written
    at its place with one `pwritev` (several threads may write chunks of one
    file), and `finish` appends the shard index and renames the temporary
    file into place (as zarr's LocalStore does: a reader never sees half a file).
    """

    def __init__(self, layout: FileLayout, file_index: int) -> None:
        self.layout = layout
        self.path = layout.path(file_index)
        rows = min(layout.file_rows, layout.array.shape[0] - file_index * layout.file_rows)
        self.chunks = -(-rows // layout.chunk_rows)
        chunk_bytes = layout.chunk_rows * int(np.prod(layout.array.shape[1:])) \
            * layout.dtype.itemsize  # strings: unused (`_write_strings`)
        self.stride = chunk_bytes + 4 * layout.checksum
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f"{self.path.name}.{uuid.uuid4().hex}.partial")
        self.fd: int | None = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)

    def write_chunk(self, inner: int, rows: np.ndarray) -> None:
        """Chunk `inner` of the file from its rows (the last chunk of the array
        may be short: it is padded with the fill value, zero)."""
        data = np.ascontiguousarray(rows, dtype=self.layout.dtype)
        _write_chunk_bytes(self.fd, _chunk_view(self.layout, data), inner * self.stride,
                           checksum=self.layout.checksum)

    def finish(self, *, index: bool = True) -> None:
        """The shard index (if sharded and `index`), then the file in place."""
        if self.layout.sharded and index:
            _pwritev_all(self.fd, _shard_index(self.layout, [self.stride] * self.chunks),
                         self.chunks * self.stride)
        os.close(self.fd)
        self.fd = None
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        """Drop the temporary file (a write that will not be finished)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.tmp.unlink(missing_ok=True)


def write_file(layout: FileLayout, start: int, rows: np.ndarray) -> None:
    """Write rows [start, start + len(rows)) of the array, which must be one
    whole file (a shard, or a chunk), replacing it atomically."""
    if start % layout.file_rows or (len(rows) != layout.file_rows
                                    and start + len(rows) != layout.array.shape[0]):
        raise ValueError(f"rows [{start}, {start + len(rows)}) are not one whole file")
    if layout.strings:
        _write_strings(layout, start // layout.file_rows, rows)
        return
    out = OpenFile(layout, start // layout.file_rows)
    try:
        for inner in range(out.chunks):
            out.write_chunk(inner, rows[inner * layout.chunk_rows: (inner + 1) * layout.chunk_rows])
        out.finish()
    except BaseException:
        out.discard()
        raise


_VLEN_UTF8 = VLenUTF8()


def _write_strings(layout: FileLayout, file_index: int, rows: np.ndarray) -> None:
    """A file of vlen-utf8 chunks (numcodecs' encoding, as zarr's codec calls
    it; the array's short last chunk padded with "", the fill value)."""
    buffers, sizes = [], []
    for lo in range(0, len(rows), layout.chunk_rows):
        chunk = np.full(layout.chunk_rows, "", dtype=object)
        part = rows[lo: lo + layout.chunk_rows]
        chunk[: len(part)] = part
        encoded = [bytes(_VLEN_UTF8.encode(chunk))]
        encoded += [crc32c(encoded[0])] if layout.checksum else []
        buffers += encoded
        sizes.append(sum(len(b) for b in encoded))
    if layout.sharded:
        buffers += _shard_index(layout, sizes)
    out = OpenFile(layout, file_index)
    try:
        _pwritev_all(out.fd, buffers, 0)
        out.finish(index=False)
    except BaseException:
        out.discard()
        raise


def _chunk_view(layout: FileLayout, chunk: np.ndarray) -> np.ndarray:
    """A chunk's bytes (padded to a whole chunk with zeros, the fill value,
    if it is the array's short last chunk)."""
    if len(chunk) < layout.chunk_rows:
        padded = np.zeros((layout.chunk_rows, *chunk.shape[1:]), dtype=chunk.dtype)
        padded[: len(chunk)] = chunk
        chunk = padded
    return chunk.reshape(-1).view(np.uint8)


def _write_chunk_bytes(fd: int, view: np.ndarray, offset: int, *, checksum: bool) -> None:
    """`view` at `offset`, then (with `checksum`) its crc32c, hashed and
    written `SLICE_BYTES` at a time: one read of the rows from memory, not
    two (a whole ViT-L chunk, 8.5 MB, hashed first left the kernel's copy
    reading memory again); the last slice and the checksum in one call."""
    crc = 0
    for lo in range(0, max(len(view), 1), SLICE_BYTES):
        piece = view[lo: lo + SLICE_BYTES]
        buffers = [piece]
        if checksum:
            crc = _crc32c_extend(crc, piece)
            if lo + SLICE_BYTES >= len(view):
                buffers.append(int(crc).to_bytes(4, "little"))
        _pwritev_all(fd, buffers, offset + lo)


def _shard_index(layout: FileLayout, sizes: list[int]) -> list[bytes]:
    """The shard index of chunks of `sizes` bytes stored one after the other
    from the file's start (the chunks past the array's end are not stored),
    and the index's checksum."""
    index = np.full((layout.per_file, 2), EMPTY, dtype="<u8")
    index[: len(sizes), 1] = sizes
    index[: len(sizes), 0] = np.cumsum([0, *sizes[:-1]])
    raw = index.tobytes()
    return [raw, crc32c(raw)]


def _pwritev_all(fd: int, buffers: list, offset: int) -> None:
    """`os.pwritev` at `offset` until every byte is out (it may write less than asked)."""
    views = [memoryview(b).cast("B") for b in buffers]
    while views:
        done = os.pwritev(fd, views[:IOV_MAX], offset)
        offset += done
        while views and done >= len(views[0]):
            done -= len(views[0])
            views.pop(0)
        if views and done:
            views[0] = views[0][done:]
