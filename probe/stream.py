"""Stream the selected items of a store in chunk-sized pieces.

One piece is the selected items of one store chunk. An epoch visits pieces in
a freshly shuffled chunk order and mixes them through a bounded shuffle
buffer. Pieces are read by a background thread (a short queue ahead of the
training loop), either every epoch from the store or once, then kept: only
the selected items, never whole chunks, stay in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from vitreg.core.prefetch import prefetched as core_prefetched

from .select import Items


class ArraySource(Protocol):
    """What a stream needs from a store: arrays that slice along rows, and the chunking.

    `Store.reader` slices uncompressed arrays straight from memory-mapped chunk
    files, so gathering a few tokens of a chunk reads only their pages.
    """

    chunk_rows: int

    def reader(self, name: str) -> Any: ...


@dataclass
class Piece:
    """The items of one chunk: features, targets, categories."""

    x: np.ndarray
    y: np.ndarray
    category: np.ndarray

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, index: np.ndarray | slice) -> Piece:
        return Piece(self.x[index], self.y[index], self.category[index])


def concat(pieces: list[Piece]) -> Piece:
    if len(pieces) == 1:
        return pieces[0]
    return Piece(
        np.concatenate([p.x for p in pieces]),
        np.concatenate([p.y for p in pieces]),
        np.concatenate([p.category for p in pieces]),
    )


class TokenStream:
    """The selected items of one store, read chunk by chunk through `gather`."""

    def __init__(
        self, source: ArraySource, items: Items, gather: Callable, *, in_memory: bool,
        prefetch: int = 2,
    ) -> None:
        self.source, self.items, self.gather = source, items, gather
        self.prefetch = prefetch
        self.arrays = {name: source.reader(name) for name in gather.arrays}
        chunk_id = items.rows // source.chunk_rows
        if chunk_id.size and np.any(np.diff(items.rows) < 0):
            raise ValueError("items must be sorted by row")
        _, starts = np.unique(chunk_id, return_index=True)
        self.bounds = np.append(starts, chunk_id.size).astype(np.int64)
        self.in_memory = in_memory
        self._cache: list[Piece] | None = None

    def __len__(self) -> int:
        return len(self.items)

    @property
    def n_pieces(self) -> int:
        return int(self.bounds.size - 1)

    def read_piece(self, i: int) -> Piece:
        """Read chunk `i`'s rows (first to last selected) and gather its items."""
        a, b = int(self.bounds[i]), int(self.bounds[i + 1])
        fields = {k: v[a:b] for k, v in self.items.fields.items()}
        lo, hi = int(fields["row"][0]), int(fields["row"][-1]) + 1
        blocks = {name: arr[lo:hi] for name, arr in self.arrays.items()}
        x, y = self.gather(blocks, fields["row"] - lo, fields)
        category = fields.get("category")
        if category is None:
            category = np.full(b - a, -1, np.int8)
        return Piece(np.ascontiguousarray(x), np.ascontiguousarray(y), category)

    def load(self) -> None:
        """Gather every piece once and keep it (a no-op when streaming)."""
        if self.in_memory and self._cache is None:
            self._cache = list(prefetched(self.read_piece, range(self.n_pieces), self.prefetch))

    def pieces(self, order: Iterable[int] | None = None) -> Iterator[Piece]:
        order = range(self.n_pieces) if order is None else order
        if self.in_memory:
            self.load()
            assert self._cache is not None
            return (self._cache[i] for i in order)
        return prefetched(self.read_piece, order, self.prefetch)

    def batches(
        self, batch_size: int, *, rng: np.random.Generator | None = None, buffer: int = 8192
    ) -> Iterator[Piece]:
        """Mini-batches: shuffled (chunk order and buffer) when `rng` is given, else in order."""
        if rng is None:
            return batches_from(self.pieces(), batch_size)
        order = rng.permutation(self.n_pieces)
        return batches_from(self.pieces(order), batch_size, rng=rng, buffer=buffer)

    def nbytes(self) -> int:
        """Bytes the gathered items take (measured on the first piece)."""
        if self.n_pieces == 0:
            return 0
        first = self.read_piece(0)
        per_item = (first.x.nbytes + first.y.nbytes + first.category.nbytes) / max(1, len(first))
        return int(per_item * len(self))


def batches_from(
    pieces: Iterable[Piece], batch_size: int, *, rng: np.random.Generator | None = None,
    buffer: int = 0,
) -> Iterator[Piece]:
    """Pieces cut and joined into batches of `batch_size` (the last may be short).

    With `rng`: a shuffle buffer of at most `buffer` items plus one piece;
    when full it is shuffled and full batches are emitted until half of it is
    left to mix with the next pieces. Without: the items in order.
    """
    threshold = max(buffer, 2 * batch_size) if rng is not None else batch_size
    keep = threshold // 2 if rng is not None else 0
    held: list[Piece] = []
    n = 0
    for piece in pieces:
        held.append(piece)
        n += len(piece)
        if n >= threshold:
            joined = _mixed(concat(held), rng)
            emit = (n - keep) // batch_size * batch_size
            for s in range(0, emit, batch_size):
                yield joined.take(slice(s, s + batch_size))
            held, n = [joined.take(slice(emit, n))], n - emit
    if n:
        joined = _mixed(concat(held), rng)
        for s in range(0, n, batch_size):
            yield joined.take(slice(s, s + batch_size))


def _mixed(piece: Piece, rng: np.random.Generator | None) -> Piece:
    return piece if rng is None else piece.take(rng.permutation(len(piece)))


def prefetched(fn: Callable[[int], Any], keys: Iterable[int], depth: int) -> Iterator[Any]:
    """`fn(k)` for each key, computed by one background thread at most `depth` ahead.

    Errors of the thread are raised here; closing the generator stops the thread.
    """
    return core_prefetched((fn(k) for k in keys), depth, name="vitreg-probe-reader")
