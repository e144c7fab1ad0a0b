"""`StoreArray`: the one type in which the cache hands out an array of a store.

Code outside `cache/` never holds a zarr object: `Store.array` and
`Store.reader` return a `StoreArray`, which reads lazily (indexing reads only
the chunks it touches) and raises vitreg's errors, whichever way it reads:

- through zarr, over the store's guard (`cache.guard`): a chunk a complete
  store lacks raises `MissingChunkError`, a chunk that fails to fetch
  `StoreReadError`, and one zarr cannot decode (a checksum that does not
  match, a chunk of the wrong size) `StoreFormatError` naming the array;
- through memory maps of the chunk files (`cache.mapped`, row slices of an
  uncompressed array of a local store), which check the same things;
- as one chosen block of a `chosen/*` array (`Store.at_block`), shaped like
  the last block's array.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

from .errors import StoreFormatError, VitregError
from .mapped import MappedArray


class StoreArray:
    """One array of a store opened for reading: `shape`, `dtype`, `chunks`,
    `len()`, NumPy-style indexing and `get_orthogonal_selection`.

    `mapped`: row slices `a[i:j]` are read from the chunk files' memory maps;
    a slice inside one chunk is then a read-only view. `slot`: the array is
    block `slot` of a `chosen/*` array (image, chosen, ...), seen as
    (image, ...).
    """

    def __init__(self, array: zarr.Array, where: str, *, mapped: MappedArray | None = None,
                 slot: int | None = None) -> None:
        self._array, self._mapped, self._slot = array, mapped, slot
        self.where = where  # the array's location without credentials, for messages
        shape, chunks = tuple(array.shape), tuple(array.chunks)
        shards = tuple(array.shards) if array.shards else None
        if slot is not None:  # the `chosen` axis (axis 1) is not seen
            shape, chunks = (shape[0], *shape[2:]), (chunks[0], *chunks[2:])
            shards = (shards[0], *shards[2:]) if shards else None
        self.shape: tuple[int, ...] = shape
        self.chunks: tuple[int, ...] = chunks
        #: the shape of one file (a shard of several chunks), None when not sharded
        self.shards: tuple[int, ...] | None = shards
        self.dtype: np.dtype = mapped.dtype if mapped is not None else array.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def mapped(self) -> bool:
        """Whether row slices come from memory maps (read-only views)."""
        return self._mapped is not None

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"StoreArray({self.where!r}, shape={self.shape}, dtype={self.dtype})"

    def __getitem__(self, key: Any) -> np.ndarray:
        if self._slot is None:
            return self._read(key)
        rows, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        if isinstance(rows, (int, np.integer)):
            return self._read(rows)[self._slot][rest]
        return self._read(rows)[:, self._slot][(slice(None), *rest)]

    def get_orthogonal_selection(self, selection: tuple[Any, ...]) -> np.ndarray:
        """Rows (and, per axis, indices) chosen independently, as zarr's method
        of that name: only the chunks that hold them are read."""
        if self._slot is None:
            return self._checked(self._array.get_orthogonal_selection, selection)
        rows, rest = selection[0], selection[1:]
        data = self._checked(self._array.get_orthogonal_selection, (rows,))
        return data[:, self._slot][(slice(None), *rest)]

    def nbytes_stored(self) -> int:
        """Bytes the array's chunk files take (a listing of the store)."""
        return int(self._array.nbytes_stored())

    def _read(self, key: Any) -> np.ndarray:
        if self._mapped is not None and isinstance(key, slice) and key.step in (None, 1):
            return self._mapped[key]
        return self._checked(self._array.__getitem__, key)

    def _checked(self, read: Any, key: Any) -> np.ndarray:
        try:
            return read(key)
        except VitregError:
            raise  # a missing or refused chunk (the guard), already a sentence
        except (ValueError, TypeError) as exc:
            raise StoreFormatError(
                f"{self.where}[{key}]: a chunk is damaged ({exc}); run `vitreg verify` on "
                "the store to name it"
            ) from exc
