"""Buffer rows into whole chunks and write them from a background thread.

Writes are chunk-aligned along `image`, so two writers never touch one chunk,
and `status` is written after the data of its rows: a reader trusts only rows
with status 1, and a killed run leaves no row that claims to be written.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import zarr

from .errors import VitregError
from .store import write_rows

STATUS_PENDING, STATUS_OK, STATUS_FAILED = 0, 1, 2


class UnalignedWriteError(VitregError, AssertionError):
    """A write range that is not chunk-aligned: a bug, never a silent loss."""

#: Arrays written last, in this order; `status` must be the very last.
_ROW_META = ("key", "label", "error", "status")


@dataclass
class _ChunkBuffer:
    start: int
    stop: int
    data: dict[str, np.ndarray] = field(default_factory=dict)
    filled: np.ndarray | None = None

    def add(self, rows: np.ndarray, values: dict[str, np.ndarray], arrays: dict) -> None:
        if self.filled is None:
            self.filled = np.zeros(self.stop - self.start, dtype=bool)
        local = rows - self.start
        if local.size and local[-1] - local[0] == local.size - 1 and (np.diff(local) == 1).all():
            local = slice(int(local[0]), int(local[-1]) + 1)  # a block copy, not a scatter
        for name, value in values.items():
            if name not in self.data:
                array = arrays[name]
                dtype = object if array.dtype.kind in "OTU" else array.dtype
                # empty, not zeros: a chunk is written only once every row is in
                self.data[name] = np.empty((self.stop - self.start, *array.shape[1:]), dtype)
            self.data[name][local] = value
        self.filled[local] = True

    @property
    def complete(self) -> bool:
        return self.filled is not None and bool(self.filled.all())


class ChunkWriter:
    """Accept rows in any order; write each chunk once all its rows are in.

    Back-pressure counts rows: the caller blocks only while more than
    `max_pending_rows` rows are queued for the write thread (and so in
    memory); by default two chunks, or `max_pending` chunks. A loop that puts
    batches of many chunks passes a bound of a few batches (`WriteTarget.writer`):
    a bound in chunks made a 256-image ViT-L batch (16 chunks) wait for most
    of its own writes. `waited` is the time the caller spent blocked.
    """

    def __init__(
        self, root: zarr.Group, names: list[str], *, max_pending: int = 2,
        max_pending_rows: int | None = None, rows: tuple[int, int] | None = None,
    ) -> None:
        # A chunk is written only once all its rows are computed, so it is
        # almost never all fill value; zarr's check for that (to skip writing
        # it) scans every chunk: plain zarr wrote `tokens` at 360-538 MB/s,
        # this writer without the check at 615-950 (bench/bench_storage.py).
        self.arrays = {name: root[name].with_config({"write_empty_chunks": True}) for name in names}
        self.n_rows = self.arrays["status"].shape[0]
        # the unit of writes: a shard (all its chunks at once) when sharded
        self.chunk_rows = write_rows(self.arrays["status"])
        self.rows = rows or (0, self.n_rows)
        self._check_aligned(*self.rows)
        self.max_pending_rows = max_pending_rows or max_pending * self.chunk_rows
        self.waited = 0.0
        self.rows_written = 0
        self._buffers: dict[int, _ChunkBuffer] = {}
        self._pending: list[tuple[Future, int]] = []  # (write, rows)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vitreg-writer")

    def _check_aligned(self, start: int, stop: int) -> None:
        """A writer owns whole chunks: zarr has no locks, and two writers of
        one chunk lose data silently. An unaligned range is a bug: fail loudly."""
        if start % self.chunk_rows or (stop % self.chunk_rows and stop != self.n_rows):
            raise UnalignedWriteError(
                f"rows [{start}, {stop}) do not start and end on chunk boundaries "
                f"(chunks of {self.chunk_rows} rows, {self.n_rows} rows in all)"
            )

    def chunk_bounds(self, index: int) -> tuple[int, int]:
        start = index * self.chunk_rows
        return start, min(start + self.chunk_rows, self.n_rows)

    def put(self, rows: np.ndarray, values: dict[str, np.ndarray]) -> None:
        """Add rows; `values` maps array names to arrays whose first axis is `rows`."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < self.rows[0] or rows.max() >= self.rows[1]):
            raise UnalignedWriteError(
                f"rows {rows.min()}..{rows.max()} fall outside this writer's range {self.rows}"
            )
        for cid, part in self._split(rows):
            buf = self._buffers.get(cid)
            if buf is None:
                buf = self._buffers[cid] = _ChunkBuffer(*self.chunk_bounds(cid))
            buf.add(rows[part], {k: v[part] for k, v in values.items()}, self.arrays)
            if buf.complete:
                self._submit(self._buffers.pop(cid))

    def _split(self, rows: np.ndarray) -> list[tuple[int, slice | np.ndarray]]:
        """(chunk, index into `rows`) per chunk the rows touch: slices (views,
        no copy) when the rows are increasing, as the loader gives them;
        boolean masks otherwise."""
        chunk_ids = rows // self.chunk_rows
        if rows.size and (rows.size == 1 or bool((np.diff(rows) > 0).all())):
            firsts = np.flatnonzero(np.diff(chunk_ids)) + 1
            bounds = [0, *firsts.tolist(), rows.size]
            return [(int(chunk_ids[a]), slice(a, b)) for a, b in zip(bounds, bounds[1:])]
        return [(int(cid), chunk_ids == cid) for cid in np.unique(chunk_ids)]

    def _submit(self, buf: _ChunkBuffer) -> None:
        self._raise_failed()
        rows = buf.stop - buf.start
        while self._pending and sum(n for _, n in self._pending) + rows > self.max_pending_rows:
            start = time.perf_counter()
            self._pending.pop(0)[0].result()
            self.waited += time.perf_counter() - start
        self._pending.append((self._pool.submit(self._write, buf), rows))

    def _write(self, buf: _ChunkBuffer) -> None:
        region = slice(buf.start, buf.stop)
        data_names = [n for n in buf.data if n not in _ROW_META]
        for name in data_names + [n for n in _ROW_META if n in buf.data]:
            self.arrays[name][region] = buf.data[name]
        self.rows_written += buf.stop - buf.start

    def _raise_failed(self) -> None:
        done = [item for item in self._pending if item[0].done()]
        for item in done:
            self._pending.remove(item)
            item[0].result()  # re-raises the write thread's error here

    def close(self) -> None:
        """Wait for every queued write; refuse to drop rows of unfinished chunks."""
        try:
            for fut, _ in self._pending:
                start = time.perf_counter()
                fut.result()
                self.waited += time.perf_counter() - start
        finally:
            self._pending.clear()
            self._pool.shutdown(wait=True)
        if self._buffers:
            open_chunks = sorted(self._buffers)
            raise RuntimeError(
                f"chunks {open_chunks} were never completed; their rows stay pending")

    def abort(self) -> None:
        """Stop without writing unfinished chunks (their rows stay pending)."""
        self._buffers.clear()
        for fut, _ in self._pending:
            fut.cancel()
        self._pool.shutdown(wait=True)
