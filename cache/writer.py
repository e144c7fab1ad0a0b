"""Write rows chunk by chunk from background threads, each file (a shard,
or a chunk) put in place once all its chunks are written.

Writes are file-aligned along `image`, so two writers never touch one file,
and `status` is written after the data of its rows: a reader trusts only rows
with status 1, and a killed run leaves no row that claims to be written.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import zarr

from vitreg.core.runtime import usable_cores

from .names import ROW_META
from .shardfile import OpenFile, file_layout, write_file
from .store import write_rows

STATUS_PENDING, STATUS_OK, STATUS_FAILED = 0, 1, 2


class UnalignedWriteError(AssertionError):
    """A write range that is not chunk-aligned: a bug, never a silent loss."""

def write_threads() -> int:
    """Threads writing chunks: two where a core is free for the second (it
    overlaps one chunk's checksum, which holds the GIL, with another's
    `pwritev`), one on 2 cores, where the loop's forward pass (a CPU run)
    wants both. `bench/bench_writer.py` on 2 cores shared with other jobs
    could not tell them apart (two runs, ratios of the medians to a plain
    write: one thread 1.01 and 0.50, two threads 0.72 and 0.61)."""
    return 2 if usable_cores() > 2 else 1

#: Arrays written last, in this order; `status` must be the very last.
_ROW_META = ROW_META


@dataclass
class _ChunkBuffer:
    start: int
    stop: int
    data: dict[str, np.ndarray] = field(default_factory=dict)
    filled: np.ndarray | None = None

    def add(self, rows: np.ndarray, values: dict[str, np.ndarray], arrays: dict,
            spare: _Spare | None = None) -> None:
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
                shape = (self.stop - self.start, *array.shape[1:])
                reused = spare.take(name, shape, dtype) if spare and dtype is not object \
                    else None
                self.data[name] = reused if reused is not None else np.empty(shape, dtype)
            self.data[name][local] = value
        self.filled[local] = True

    @property
    def complete(self) -> bool:
        return self.filled is not None and bool(self.filled.all())


class _Spare:
    """Buffers of written chunks, kept for the next: a new buffer costs a
    page fault per 4 KiB on first touch."""

    def __init__(self) -> None:
        self._free: dict[tuple, list[np.ndarray]] = {}
        self._lock = threading.Lock()

    def take(self, name: str, shape: tuple, dtype) -> np.ndarray | None:
        with self._lock:
            free = self._free.get((name, shape, np.dtype(dtype)))
            return free.pop() if free else None

    def give(self, data: dict[str, np.ndarray]) -> None:
        with self._lock:
            for name, array in data.items():
                if array.dtype != object:
                    self._free.setdefault((name, array.shape, array.dtype), []).append(array)


@dataclass
class Lent:
    """The writes that read a caller's arrays in place (`ChunkWriter.put(lend=True)`):
    the caller must not change those arrays before `wait` returns."""

    futures: list[Future] = field(default_factory=list)

    def wait(self) -> float:
        """Block until those writes are done; the seconds waited."""
        start = time.perf_counter()
        for fut in self.futures:
            fut.result()
        return time.perf_counter() - start


@dataclass
class _File:
    """A file (a shard, or a chunk) whose chunks are being written."""

    start: int
    stop: int
    chunks: int  # chunks it stores
    opened: dict[str, OpenFile] = field(default_factory=dict)  # arrays written here
    other: dict[str, np.ndarray] = field(default_factory=dict)  # arrays zarr writes
    done: int = 0


class ChunkWriter:
    """Accept rows in any order; write each chunk once all its rows are in,
    and put each file in place once all its chunks are written.

    Back-pressure counts rows: the caller blocks only while more than
    `max_pending_rows` rows are queued for the write threads (and so in
    memory); by default two files, or `max_pending` files. A loop that puts
    batches of many chunks passes a bound of a few batches (`WriteTarget.writer`):
    a bound in chunks made a 256-image ViT-L batch (16 chunks) wait for most
    of its own writes. `waited` is the time the caller spent blocked.

    `threads` threads (default `write_threads()`) write chunks: each numeric
    array's chunk goes with one `pwritev` at its fixed place in a temporary
    file (`shardfile.OpenFile`, byte for byte what zarr would write); strings
    are gathered per file and written whole (`shardfile.write_file`), and
    anything `shardfile` does not know through zarr. When a file's last
    chunk is in, the thread that wrote it puts the data files in place, then
    `key`, `label`, `error` and last `status`.

    `put(..., lend=True)` writes whole chunks from the caller's arrays
    without copying them (ViT-L rows come at 0.6-0.8 GB/s: a copy is a
    fifth of the writer's time) and returns a `Lent` to wait on before
    the caller reuses them; rows of chunks it does not cover whole are copied.
    """

    def __init__(
        self, root: zarr.Group, names: list[str], *, max_pending: int = 2,
        max_pending_rows: int | None = None, rows: tuple[int, int] | None = None,
        threads: int | None = None,
    ) -> None:
        # A chunk is written only once all its rows are computed, so it is
        # almost never all fill value; zarr's check for that (to skip writing
        # it) scans every chunk: plain zarr wrote `tokens` at 360-538 MB/s,
        # this writer without the check at 615-950 (bench/bench_storage.py).
        self.arrays = {name: root[name].with_config({"write_empty_chunks": True}) for name in names}
        self.layouts = {name: file_layout(array) for name, array in self.arrays.items()}
        status = self.arrays["status"]
        self.n_rows = status.shape[0]
        # the unit a writer owns: a shard (all its chunks) when sharded
        self.chunk_rows = write_rows(status)
        self.inner_rows = int(status.chunks[0])  # the unit written: one chunk
        self.rows = rows or (0, self.n_rows)
        self._check_aligned(*self.rows)
        self.max_pending_rows = max_pending_rows or max_pending * self.chunk_rows
        self.waited = 0.0
        self.rows_written = 0
        self._buffers: dict[int, _ChunkBuffer] = {}  # chunks whose rows are coming in
        self._files: dict[int, _File] = {}  # files whose chunks are being written
        self._pending: list[tuple[Future, int]] = []  # (write, rows)
        self._lock = threading.Lock()
        self._spare = _Spare()
        self._pool = ThreadPoolExecutor(max_workers=threads or write_threads(),
                                        thread_name_prefix="vitreg-writer")

    def _check_aligned(self, start: int, stop: int) -> None:
        """A writer owns whole files: zarr has no locks, and two writers of
        one file lose data silently. An unaligned range is a bug: fail loudly."""
        if start % self.chunk_rows or (stop % self.chunk_rows and stop != self.n_rows):
            raise UnalignedWriteError(
                f"rows [{start}, {stop}) do not start and end on chunk boundaries "
                f"(files of {self.chunk_rows} rows, {self.n_rows} rows in all)"
            )

    def chunk_bounds(self, index: int) -> tuple[int, int]:
        """Rows of chunk `index` (the unit written, not the file)."""
        start = index * self.inner_rows
        return start, min(start + self.inner_rows, self.n_rows)

    def put(self, rows: np.ndarray, values: dict[str, np.ndarray], *, lend: bool = False) -> Lent:
        """Add rows; `values` maps array names to arrays whose first axis is `rows`.
        With `lend`, chunks the rows cover whole are written from `values`
        in place: wait on the returned `Lent` before changing them."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < self.rows[0] or rows.max() >= self.rows[1]):
            raise UnalignedWriteError(
                f"rows {rows.min()}..{rows.max()} fall outside this writer's range {self.rows}"
            )
        lent = Lent()
        for cid, part in self._split(rows):
            piece = {k: v[part] for k, v in values.items()}
            start, stop = self.chunk_bounds(cid)
            if lend and isinstance(part, slice) and part.stop - part.start == stop - start \
                    and cid not in self._buffers:
                lent.futures.append(self._submit(cid, piece))
                continue
            buf = self._buffers.get(cid)
            if buf is None:
                buf = self._buffers[cid] = _ChunkBuffer(start, stop)
            buf.add(rows[part], piece, self.arrays, self._spare)
            if buf.complete:
                self._submit(cid, self._buffers.pop(cid).data, spare=True)
        return lent

    def _split(self, rows: np.ndarray) -> list[tuple[int, slice | np.ndarray]]:
        """(chunk, index into `rows`) per chunk the rows touch: slices (views,
        no copy) when the rows are increasing, as the loader gives them;
        boolean masks otherwise."""
        chunk_ids = rows // self.inner_rows
        if rows.size and (rows.size == 1 or bool((np.diff(rows) > 0).all())):
            firsts = np.flatnonzero(np.diff(chunk_ids)) + 1
            bounds = [0, *firsts.tolist(), rows.size]
            return [(int(chunk_ids[a]), slice(a, b)) for a, b in zip(bounds, bounds[1:])]
        return [(int(cid), chunk_ids == cid) for cid in np.unique(chunk_ids)]

    def _submit(self, cid: int, data: dict[str, np.ndarray], spare: bool = False) -> Future:
        self._raise_failed()
        rows = len(next(iter(data.values())))
        while self._pending and sum(n for _, n in self._pending) + rows > self.max_pending_rows:
            start = time.perf_counter()
            self._pending.pop(0)[0].result()
            self.waited += time.perf_counter() - start
        fut = self._pool.submit(self._write, cid, data)
        if spare:  # the chunk's buffers are the writer's: reuse them once written
            fut.add_done_callback(lambda _: self._spare.give(data))
        self._pending.append((fut, rows))
        return fut

    def _write(self, cid: int, data: dict[str, np.ndarray]) -> None:
        """Write chunk `cid` of every array; the last chunk of a file finishes it."""
        out = self._file(cid * self.inner_rows // self.chunk_rows)
        inner = (cid * self.inner_rows - out.start) // self.inner_rows
        for name, value in data.items():
            if name in out.opened:
                out.opened[name].write_chunk(inner, value)
            else:
                local = cid * self.inner_rows - out.start
                out.other[name][local: local + len(value)] = value
        with self._lock:
            out.done += 1
            last = out.done == out.chunks
        if last:
            self._finish_file(out, names=list(data))

    def _file(self, index: int) -> _File:
        """The file `index` being written, opened by its first chunk."""
        with self._lock:
            out = self._files.get(index)
            if out is None:
                start = index * self.chunk_rows
                stop = min(start + self.chunk_rows, self.n_rows)
                out = self._files[index] = _File(start, stop, -(-(stop - start) // self.inner_rows))
                for name, array in self.arrays.items():
                    layout = self.layouts[name]
                    if layout is not None and not layout.strings:
                        out.opened[name] = OpenFile(layout, index)
                    else:
                        dtype = object if array.dtype.kind in "OTU" else array.dtype
                        out.other[name] = np.empty((stop - start, *array.shape[1:]), dtype)
            return out

    def _finish_file(self, out: _File, names: list[str]) -> None:
        """Data files in place, then `key`, `label`, `error` and `status`."""
        region = slice(out.start, out.stop)
        data_names = [n for n in names if n not in _ROW_META]
        for name in data_names + [n for n in _ROW_META if n in names]:
            if name in out.opened:
                out.opened[name].finish()
            elif self.layouts[name] is not None:  # strings, a file at a time
                write_file(self.layouts[name], out.start, out.other[name])
            else:
                self.arrays[name][region] = out.other[name]
        with self._lock:
            self._files.pop(out.start // self.chunk_rows, None)
            self.rows_written += out.stop - out.start
        for opened in out.opened.values():  # arrays no put named (none in practice)
            opened.discard()

    def _raise_failed(self) -> None:
        done = [item for item in self._pending if item[0].done()]
        for item in done:
            self._pending.remove(item)
            item[0].result()  # re-raises the write thread's error here

    def _discard_open_files(self) -> None:
        with self._lock:
            files, self._files = list(self._files.values()), {}
        for out in files:
            for opened in out.opened.values():
                opened.discard()

    def close(self) -> None:
        """Wait for every queued write; refuse to drop rows of unfinished chunks."""
        failed = True
        try:
            for fut, _ in self._pending:
                start = time.perf_counter()
                fut.result()
                self.waited += time.perf_counter() - start
            failed = False
        finally:
            self._pending.clear()
            self._pool.shutdown(wait=True)
            if failed:  # a write failed: no file it left unfinished goes in place
                self._discard_open_files()
        if self._buffers or self._files:
            open_chunks = sorted(self._buffers)
            open_files = sorted(self._files)
            self._discard_open_files()
            raise RuntimeError(
                f"chunks {open_chunks} (files {open_files}) were never completed; "
                "their rows stay pending")

    def abort(self) -> None:
        """Stop without writing unfinished files (their rows stay pending)."""
        self._buffers.clear()
        for fut, _ in self._pending:
            fut.cancel()
        self._pool.shutdown(wait=True)
        self._discard_open_files()
