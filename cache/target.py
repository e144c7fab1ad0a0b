"""`open_for_write`: the one way a writer opens a store (create, resume or refuse).

It returns a `WriteTarget` that knows the writer's chunk-aligned range of
rows and which of them are still pending, hands out the `ChunkWriter`, and
marks the store complete. Extraction goes through it and never touches zarr.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from .attrs import check_config
from .errors import ConfigMismatchError
from .layout import chunk_rows_for_store, row_range, shard_rows_for_store
from .names import KEY, STATUS
from .reader import failure_summary, mark_complete
from .schema import ArraySpec, Geometry, parse_token_mode
from .store import delete_store, ensure_store, open_group, stored_arrays, write_rows
from .writer import STATUS_FAILED, STATUS_OK, STATUS_PENDING, ChunkWriter


@dataclass
class WriteTarget:
    """An open store and one writer's share of it. The zarr group stays
    private: code outside `cache/` writes through `writer()` and finishes
    through `finish()`, never through zarr."""

    url: str
    _root: zarr.Group
    rows: tuple[int, int]

    @property
    def names(self) -> list[str]:
        return stored_arrays(self._root)

    @property
    def dtypes(self) -> dict[str, str]:
        return {name: str(self._root[name].dtype) for name in self.names}

    @property
    def chunk_rows(self) -> int:
        """Rows of one file (shard or chunk): the unit of writes."""
        return write_rows(self._root[STATUS])

    def pending(self) -> np.ndarray:
        """A mask over every row: pending and inside this writer's range."""
        todo = self._root[STATUS][:] == STATUS_PENDING
        todo[: self.rows[0]] = todo[self.rows[1]:] = False
        return todo

    def writer(self, batch_rows: int = 0) -> ChunkWriter:
        """A writer of this range that lets at least two batches of
        `batch_rows` (and two chunks) be in flight before the caller waits."""
        bound = max(2 * self.chunk_rows, 2 * batch_rows + self.chunk_rows)
        return ChunkWriter(self._root, self.names, rows=self.rows, max_pending_rows=bound)

    def check_keys(self, planned: list[str]) -> None:
        """Refuse a store whose finished rows hold other keys than `planned`."""
        check_finished_keys(self._root, planned)

    def finish(self, *, shared: bool) -> tuple[int, int]:
        """Mark the store complete if no row is pending; (ok, failed)."""
        return mark_complete(self._root, shared=shared)

    def own_counts(self) -> tuple[int, int]:
        """(ok, failed) of this writer's rows only: what a torchrun rank other
        than the leader reports, without reading the whole `status`."""
        status = self._root[STATUS][self.rows[0]: self.rows[1]]
        return int((status == STATUS_OK).sum()), int((status == STATUS_FAILED).sum())

    def failures(self, status: int = STATUS_FAILED, *, own: bool = False) -> list[dict[str, Any]]:
        """Failed (or warned) rows grouped by reason; `own`: this writer's rows only."""
        return failure_summary(self._root, status=status, region=self.rows if own else None)


def open_for_write(
    url: str, *, geometry: Geometry, attrs: dict[str, Any], specs: Iterable[ArraySpec],
    chunk_rows: int | None = None, overwrite: bool = False, create: bool = True,
    rank: int = 0, world: int = 1,
) -> WriteTarget:
    """Open the store at `url` for writer `rank` of `world`.

    `create`: make the store (or finish a creation cut short; with
    `overwrite`, delete it first); else only open one another writer made.
    Either way an existing store written with another configuration is
    refused (and `WriteTarget.check_keys` refuses one whose rows changed).
    """
    if create:
        if overwrite:
            delete_store(url)
        _, sample_k = parse_token_mode(attrs["token_mode"])
        n_rows = attrs["n_rows"]
        chunk = chunk_rows_for_store(geometry, n_rows, chunk_rows)
        ensure_store(
            url, geometry=geometry, n_rows=n_rows, attrs=attrs, sample_k=sample_k,
            specs=specs, chunk_rows=chunk,
            shard_rows=shard_rows_for_store(geometry, n_rows, chunk, explicit=bool(chunk_rows)),
            check=lambda old: check_config(old, attrs),
        )
    root = open_group(url, mode="r+")
    if not create:
        check_config(root.attrs["vitreg"], attrs)
    rows = row_range(attrs["n_rows"], write_rows(root[STATUS]), rank, world)
    return WriteTarget(url, root, rows)


def check_finished_keys(root: zarr.Group, planned: list[str]) -> None:
    """The keys of the rows already written are those the plan puts there."""
    done = np.flatnonzero(root[STATUS][:] != STATUS_PENDING)
    if not len(done):
        return
    stored = root[KEY].get_orthogonal_selection((done,))
    wrong = [int(r) for r, key in zip(done, stored) if key != planned[r]]
    if wrong:
        row = wrong[0]
        raise ConfigMismatchError(
            f"{len(wrong)} finished row(s) of the store hold other samples than the shards "
            f"give now (row {row}: store {stored[list(done).index(row)]!r}, shards "
            f"{planned[row]!r}); the shards changed: use another --out, or --overwrite")
