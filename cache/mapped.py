"""Rows of an uncompressed array of a local store, read through memory maps.

`tokens`, `sampled/tokens` and `pixels` are stored with zarr's `bytes` codec
alone (no compressor, see cache_schema.md), so each chunk file holds exactly
the chunk's little-endian C-order array (the zarr v3 spec's `bytes` codec),
followed since schema 1.3 by the 4-byte checksum of zarr's `crc32c` codec,
which a map of the array's bytes leaves out (`vitreg verify` and
`open_store(..., verify=True)` check it).
Mapping the file lets a reader touch only the pages it indexes: a probe that
wants 4% of the tokens reads those pages instead of copying every 16 MiB chunk
through zarr's buffers, and a slice that lies inside one chunk costs no copy.

This is safe next to a writer: zarr's LocalStore replaces chunk files
atomically (write, then rename), so a mapped file is never truncated under a
reader. Anything else (remote stores, zip files, compressed arrays, chunking
along a second axis) is read through zarr unchanged.

Sharded arrays (schema 1.5): a file holds several chunks along `image` and,
at its end, zarr's shard index (an (offset, nbytes) uint64 pair per chunk,
then a crc32c). A chunk is mapped at its offset after reading that index
(16 bytes per chunk), so one row still costs its own pages, never the shard.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.storage
from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec
from zarr.codecs.sharding import ShardingCodecIndexLocation

from vitreg.core.scrub import redact

from .errors import MissingChunkError, StoreReadError
from .guard import damaged, inside, missing, unwrap


class MappedArray:
    """Row slices `a[i:j]` of one array as NumPy arrays.

    A slice inside one chunk is a read-only view of the chunk's memory map (no
    copy); one over several chunks is joined into a new array. Any other index
    (rows by list, a single row, a tuple) is handed to zarr.
    """

    def __init__(self, array: zarr.Array, root: Path, endian: str, suffix: int = 0,
                 complete: bool = False) -> None:
        self.array = array
        self.complete = complete
        self._root = os.path.realpath(root)
        self._where = redact(root)
        self._folders: dict[str, bool] = {}
        self.shape = tuple(array.shape)
        self.chunks = tuple(array.chunks)
        self.dtype = array.dtype.newbyteorder("<" if endian == "little" else ">")
        self._dir = Path(root, array.path)
        self._chunk_bytes = int(np.prod(self.chunks)) * self.dtype.itemsize
        self._file_bytes = self._chunk_bytes + suffix  # a crc32c checksum follows the data
        #: chunks per file along `image` (1: not sharded)
        self.per_file = (array.shards or array.chunks)[0] // self.chunks[0]

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            return self.array[key]
        start, stop, _ = key.indices(self.shape[0])
        if stop <= start:
            return np.empty((0, *self.shape[1:]), dtype=self.dtype)
        rows = self.chunks[0]
        parts = [
            self.chunk(i)[max(start - i * rows, 0): min(stop - i * rows, rows)]
            for i in range(start // rows, (stop - 1) // rows + 1)
        ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def chunk(self, index: int) -> np.ndarray:
        """Chunk `index` whole (edge chunks are stored whole too), read-only."""
        shard, inner = divmod(index, self.per_file)
        key = self.array.metadata.encode_chunk_key((shard,) + (0,) * (len(self.shape) - 1))
        path = self._dir / key
        name = f"{self.array.path}/{key}" if self.array.path else key
        try:
            found = inside(self._root, name, self._where, self._folders)
        except OSError as exc:  # a link loop, a permission
            raise StoreReadError(f"{self._where}: cannot read {name} ({exc}); check the file "
                                 "(its permissions, links, the disk)") from exc
        gone = found is None
        size = 0 if gone else found.st_size
        offset = None if gone else (
            self._offset(path, size, inner, name) if self.per_file > 1 else 0)
        if offset is None:
            if self.complete:
                shown = name if gone else f"{name} (its chunk {inner})"
                raise MissingChunkError(missing(self._where, shown))
            # zarr does not write a chunk equal to the fill value: it reads as that value.
            filled = np.full(self.chunks, self.array.fill_value, dtype=self.dtype)
            filled.flags.writeable = False
            return filled
        if self.per_file == 1 and size != self._file_bytes:
            raise MissingChunkError(damaged(
                self._where, name, f"is {size} bytes, expected {self._file_bytes} for an "
                f"uncompressed chunk of shape {self.chunks} {self.dtype} (truncated?)"))
        return np.memmap(path, dtype=self.dtype, mode="r", shape=self.chunks, offset=offset)

    def _offset(self, path: Path, size: int, inner: int, name: str) -> int | None:
        """Where chunk `inner` of the shard file `path` starts (None: not stored),
        from the shard index at the file's end."""
        index_bytes = 16 * self.per_file + 4  # + the index's crc32c
        if size < index_bytes:
            raise MissingChunkError(damaged(self._where, name, f"is {size} bytes, shorter than "
                                                                "its shard index"))
        with open(path, "rb") as f:
            f.seek(size - index_bytes)
            index = np.frombuffer(f.read(index_bytes - 4), dtype="<u8").reshape(-1, 2)
        offset, nbytes = (int(v) for v in index[inner])
        if offset == nbytes == 2**64 - 1:
            return None
        if nbytes != self._file_bytes or offset + nbytes > size - index_bytes:
            raise MissingChunkError(damaged(
                self._where, name,
                f"holds its chunk {inner} as {nbytes} bytes at {offset}, expected "
                f"{self._file_bytes} for an uncompressed chunk of shape {self.chunks} "
                f"{self.dtype} (truncated?)"))
        return offset


def mapped(array: zarr.Array, *, complete: bool = False) -> MappedArray | None:
    """A `MappedArray` over `array` when its chunk files can be mapped, else
    None; `complete`: the store has every chunk, so a missing one is an error."""
    store = unwrap(array.store)
    if not isinstance(store, zarr.storage.LocalStore) or array.metadata.zarr_format != 3:
        return None
    codecs = array.metadata.codecs
    if len(codecs) == 1 and isinstance(codecs[0], ShardingCodec):
        sharding = codecs[0]
        if (sharding.index_location != ShardingCodecIndexLocation.end
                or [type(c) for c in sharding.index_codecs] != [BytesCodec, Crc32cCodec]
                or tuple(array.shards[1:]) != tuple(array.chunks[1:])):
            return None
        codecs = sharding.codecs
    if not isinstance(codecs[0], BytesCodec) or [type(c) for c in codecs[1:]] not in (
        [], [Crc32cCodec]
    ):
        return None
    if array.dtype.kind not in "biuf" or tuple(array.chunks[1:]) != tuple(array.shape[1:]):
        return None
    endian = codecs[0].endian.value if codecs[0].endian is not None else "little"
    return MappedArray(array, Path(store.root), endian, suffix=4 * (len(codecs) - 1),
                       complete=complete)
