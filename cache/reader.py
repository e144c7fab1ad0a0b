"""Read a store lazily: arrays, rows with status 1 in chunk-sized batches,
provenance, and the outlier threshold computed once, the same way for all."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from functools import cached_property
from typing import Any

import numpy as np
import zarr

from vitreg.core.scrub import redact

from . import names as n
from .arrays import StoreArray
from .errors import IncompleteStoreError, InputError, MissingArrayError
from .mapped import mapped
from .names import BLOCK_ARRAYS
from .schema import Geometry
from .store import (
    TOKENS_CHUNK_BYTES,
    geometry_from_attrs,
    open_group,
    stored_arrays,
    update_attrs,
)
from .writer import STATUS_FAILED, STATUS_OK, STATUS_PENDING

#: The study's outlier rule: a patch token is an outlier when its norm is
#: above this percentile of every patch-token norm of the store.
OUTLIER_PERCENTILE = 98.0

class Store:
    """A vitreg store opened for reading (a local path or any fsspec URL).

    `verify`: read every chunk through zarr, whose `crc32c` codec checks it,
    instead of memory-mapping local chunk files (which skips the checksum).
    `url` is the location without credentials (`core.scrub.redact`): what
    results, reports and messages name; `source` is the location as given.
    """

    def __init__(self, url: str, *, allow_partial: bool = False, verify: bool = False) -> None:
        self.source = str(url)
        self.url = redact(self.source)
        self.verify = verify
        self._root = open_group(self.source, mode="r")  # never handed out: see `array`
        self._arrays: dict[str, StoreArray] = {}
        self._readers: dict[str, StoreArray] = {}
        self.block: int | None = None  # 0-based block read as the last (`at_block`)
        if not allow_partial and not self.complete:
            counts = self.counts()
            raise IncompleteStoreError(
                f"store {self.url} is incomplete ({counts['pending']} of {self.n_rows} rows "
                "pending); finish it with the same `vitreg extract` command, or pass "
                "--allow-partial to use the rows written so far"
            )

    # -- provenance and shape -------------------------------------------------
    @property
    def meta(self) -> dict[str, Any]:
        """The root `vitreg` attributes: model, weights, preprocessing, versions."""
        return dict(self._root.attrs["vitreg"])

    @property
    def complete(self) -> bool:
        return self.meta.get("complete") is True  # a JSON true, never the string "false"

    @cached_property
    def geometry(self) -> Geometry:
        return geometry_from_attrs(self.meta)

    # Shapes, chunking and the array list are looked up once: each zarr
    # lookup re-reads metadata, which adds up over a loop of many chunks.
    @cached_property
    def n_rows(self) -> int:
        return int(self.array(n.STATUS).shape[0])

    @cached_property
    def chunk_rows(self) -> int:
        return int(self.array(n.STATUS).chunks[0])

    @cached_property
    def names(self) -> list[str]:
        names = stored_arrays(self._root)
        if self.block is not None:  # the chosen block's arrays stand for the last block's
            names = sorted(set(names) - set(BLOCK_ARRAYS)
                           | {n for n, c in BLOCK_ARRAYS.items() if c in names})
        return names

    def at_block(self, block: int | None) -> Store:
        """This store read at block `block` (1 the first, -1 the last, None the
        last): `tokens`, `norms` and `attention` are then that block's, from the
        `chosen/*` arrays of `vitreg extract --blocks`, and the outlier
        threshold is that block's patch norms'."""
        depth, chosen = self.geometry.depth, self.geometry.chosen
        if block is None or block in (depth, -1):
            return self
        if block == 0 or not -depth <= block <= depth:
            raise InputError(f"--block {block}: the model has {depth} blocks; give 1 to {depth} "
                             f"(1 is the first) or -1 to -{depth}")
        index = block - 1 if block > 0 else depth + block
        if index not in chosen:
            held = ", ".join(str(b + 1) for b in chosen) or "none but the last"
            raise InputError(f"--block {block}: store {self.url} holds the tokens of blocks "
                             f"{held} (and the last); extract it again with --blocks {block}")
        view = Store.__new__(Store)
        view.__dict__.update({k: v for k, v in self.__dict__.items() if k != "names"},
                             _arrays={}, _readers={}, block=index)
        return view

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def array(self, name: str) -> StoreArray:
        """One array, lazily: indexing it reads only the chunks it touches and
        returns new NumPy arrays; a damaged or missing chunk raises vitreg's error."""
        if name not in self._arrays:
            self._arrays[name] = self._open(name, mapped_ok=False)
        return self._arrays[name]

    def reader(self, name: str) -> StoreArray:
        """What `batches` and the probes slice rows from: like `array`, but row
        slices of an uncompressed array of a local store come from memory maps
        of its chunk files (`cache.mapped`), read-only views where they can,
        unless the store was opened with `verify`."""
        if name not in self._readers:
            self._readers[name] = self._open(name, mapped_ok=not self.verify)
        return self._readers[name]

    def _open(self, name: str, *, mapped_ok: bool) -> StoreArray:
        if name not in self:
            raise MissingArrayError(f"store {self.url} has no array {name!r}; it has {self.names}")
        slot = None
        path = name
        if self.block is not None and name in BLOCK_ARRAYS:
            path, slot = BLOCK_ARRAYS[name], self.geometry.chosen.index(self.block)
        array = self._root[path]
        memory_map = mapped(array, complete=self.complete) if mapped_ok else None
        return StoreArray(array, f"{self.url}/{path}", mapped=memory_map, slot=slot)

    def cls_source(self) -> str:
        """Where [CLS] before the final norm is read: slot 0 of `tokens`, or of
        `sampled/prefix` (sampled stores since schema 1.4); a sampled store
        of schema < 1.4 has neither, and offers `pooled/cls` (after the final
        norm) instead."""
        for name in (n.TOKENS, n.SAMPLED_PREFIX):
            if name in self:
                return name
        return n.POOLED_CLS

    def token_source(self) -> str | None:
        """The array patch tokens are read from: `tokens`, else `sampled/tokens`
        (`--tokens sampled:K`); None for a store without patch tokens
        (`--tokens none`)."""
        return next((name for name in (n.TOKENS, n.SAMPLED_TOKENS) if name in self), None)

    def to_xarray(self) -> Any:
        """Every array as a lazy `xarray.Dataset` (groups flattened with '/'), with
        coordinates: key and label per image, kind (cls / register / patch) and
        grid row and column per token (`cache.xr`)."""
        from .xr import store_dataset

        return store_dataset(self._root, self.geometry)

    # -- rows -----------------------------------------------------------------
    @cached_property
    def status(self) -> np.ndarray:
        """Every row's status. A complete store lists its failed rows in its
        attributes, so this costs no read of the (small, many) status chunks."""
        failed = self.meta.get("failed_rows")
        if self.complete and isinstance(failed, list):
            status = np.full(self.n_rows, STATUS_OK, dtype=np.uint8)
            status[np.asarray(failed, dtype=np.int64)] = STATUS_FAILED
            return status
        return self.array(n.STATUS)[:]

    def counts(self) -> dict[str, int]:
        status = self.status
        return {
            "ok": int((status == STATUS_OK).sum()),
            "failed": int((status == STATUS_FAILED).sum()),
            "pending": int((status == STATUS_PENDING).sum()),
        }

    def ok_rows(self) -> np.ndarray:
        return np.flatnonzero(self.status == STATUS_OK)

    def chunks(self) -> Iterator[tuple[int, int]]:
        for start in range(0, self.n_rows, self.chunk_rows):
            yield start, min(start + self.chunk_rows, self.n_rows)

    def batches(
        self, names: Sequence[str], *, rows: np.ndarray | None = None
    ) -> Iterator[dict[str, np.ndarray]]:
        """Yield, chunk by chunk, the selected rows with status 1.

        Each batch maps array names to arrays over its rows, plus `row`, their
        indices in the store, and `chunk_start`, the chunk's first row. Only
        chunks that hold a selected row are read, and of those only the span
        from the first to the last selected row. Small arrays are read several
        chunks per call (see `chunks_per_read`): zarr's cost per call, not the
        bytes, dominates their reads.
        """
        wanted = self.status == STATUS_OK
        if rows is not None:
            selected = np.zeros(self.n_rows, dtype=bool)
            selected[np.asarray(rows, dtype=np.int64)] = True
            wanted &= selected
        readers = {name: self.reader(name) for name in names}
        starts = [start for start, _ in self.chunks()]
        step = self.chunks_per_read(names)
        for group in (starts[i:i + step] for i in range(0, len(starts), step)):
            stop = min(group[-1] + self.chunk_rows, self.n_rows)
            local = np.flatnonzero(wanted[group[0]:stop])
            if local.size == 0:
                continue
            lo, hi = group[0] + int(local[0]), group[0] + int(local[-1]) + 1
            blocks = {name: reader[lo:hi] for name, reader in readers.items()}
            for start in group:
                rows_here = start + np.flatnonzero(wanted[start:start + self.chunk_rows])
                if rows_here.size:
                    batch = {"row": rows_here, "chunk_start": start}
                    batch.update({name: block[rows_here - lo] for name, block in blocks.items()})
                    yield batch

    def chunks_per_read(self, names: Sequence[str]) -> int:
        """Chunks per zarr call so that one call reads about one `tokens` chunk of bytes."""
        row_bytes = 0
        for name in names:
            array = self.array(name)
            itemsize = array.dtype.itemsize if array.dtype.kind in "biuf" else 64
            row_bytes += int(np.prod(array.shape[1:], dtype=np.int64)) * itemsize
        return max(1, TOKENS_CHUNK_BYTES // max(1, row_bytes * self.chunk_rows))

    def take(self, name: str, rows: np.ndarray) -> np.ndarray:
        """The given rows of one array, reading only the chunks that hold them
        (one orthogonal selection: zarr fetches those chunks concurrently);
        every row is read as one slice."""
        rows = np.asarray(rows, dtype=np.int64)
        array = self.array(name)
        if rows.size == array.shape[0]:
            return array[:]
        return array.get_orthogonal_selection((rows,))

    def is_ok(self, row: int) -> bool:
        return bool(self.status[row] == STATUS_OK)

    # -- the outlier rule -----------------------------------------------------
    def patch_norms(self) -> np.ndarray:
        """Patch-token norms of every ok row, shape (n_ok, P), [CLS]/registers dropped."""
        prefix = self.geometry.prefix
        parts = [b[n.NORMS][:, prefix:] for b in self.batches([n.NORMS])]
        if not parts:
            return np.zeros((0, self.geometry.patches), dtype=np.float32)
        return np.concatenate(parts)

    def threshold(self, percentile: float = OUTLIER_PERCENTILE) -> float:
        """The outlier threshold: `percentile` of all patch-token norms of the store.

        A complete store carries it in its attributes (written once by
        extract); otherwise it is computed here, the same way.
        """
        cached = self.meta.get("outlier_threshold")  # the last block's
        if self.block is None and self.complete and cached \
                and float(cached["percentile"]) == percentile:
            return float(cached["value"])
        return outlier_threshold(self.patch_norms(), percentile)

    def outlier_mask(self, norms: np.ndarray, percentile: float = OUTLIER_PERCENTILE) -> np.ndarray:
        """Which patch tokens of `norms` (rows, T) are outliers; prefix tokens never are."""
        mask = norms > self.threshold(percentile)
        mask[:, : self.geometry.prefix] = False
        return mask


def outlier_threshold(patch_norms: np.ndarray, percentile: float = OUTLIER_PERCENTILE) -> float:
    """`numpy.percentile` (linear interpolation) over every patch-token norm."""
    values = np.asarray(patch_norms, dtype=np.float32).ravel()
    if values.size == 0:
        raise InputError("the store has no ok rows, so the outlier threshold is undefined; "
                         "see `vitreg info STORE` for why its rows failed")
    return float(np.percentile(values, percentile))


#: A complete store lists its failed rows in its attributes up to this many.
MAX_LISTED_FAILURES = 100_000


def mark_complete(root: zarr.Group, *, shared: bool = False) -> tuple[int, int]:
    """If no row is pending, record completeness, the failed rows and the
    outlier threshold in the attributes, once; return (ok, failed).

    `shared`: other writers may still be at work, so never write `complete:
    false` (a stale view must not undo the last writer's `true`).
    """
    status = root[n.STATUS][:]
    ok, failed = int((status == STATUS_OK).sum()), int((status == STATUS_FAILED).sum())
    complete = ok + failed == len(status)
    if shared and not complete:
        return ok, failed
    changes: dict[str, Any] = {"complete": complete}
    if complete:
        failed_rows = np.flatnonzero(status == STATUS_FAILED)
        changes["failed_rows"] = (
            failed_rows.tolist() if len(failed_rows) <= MAX_LISTED_FAILURES else None
        )
        # what `vitreg info` shows as bytes on disk, for readers that cannot list
        changes["stored_bytes"] = {name: root[name].nbytes_stored() for name in stored_arrays(root)}
    if complete and ok:
        prefix = int(root.attrs["vitreg"]["prefix_tokens"])
        rows = np.flatnonzero(status == STATUS_OK)
        norms = root[n.NORMS].get_orthogonal_selection((rows, slice(prefix, None)))
        changes["outlier_threshold"] = {
            "percentile": OUTLIER_PERCENTILE, "value": outlier_threshold(norms),
        }
    update_attrs(root, **changes)  # and, once complete, the consolidated metadata
    return ok, failed


def open_store(url: str, *, allow_partial: bool = False, verify: bool = False) -> Store:
    """Open a store for reading; see `Store`."""
    return Store(url, allow_partial=allow_partial, verify=verify)


def failure_summary(root: zarr.Group, *, status: int = STATUS_FAILED, examples: int = 3,
                    region: tuple[int, int] | None = None) -> list[dict[str, Any]]:
    """Rows of `status` (of the rows `region`, default all) with a text in
    `error` (failed rows: the reason; ok rows: a warning) grouped by that
    text, most frequent first, with the count and example keys."""
    first, stop = region or (0, root[n.STATUS].shape[0])
    error = root[n.ERROR][first:stop]
    mine = root[n.STATUS][first:stop] == status
    rows = np.flatnonzero(mine if status == STATUS_FAILED else mine & (error != ""))
    if not len(rows):
        return []
    keys = root[n.KEY].get_orthogonal_selection((rows + first,))
    groups: dict[str, list[str]] = {}
    for text, key in zip(error[rows], keys):
        # "row 12 has the same key": one cause, whatever the row
        reason = re.sub(r"\brow \d+", "row N", str(text)) or "(no reason recorded)"
        groups.setdefault(reason, []).append(str(key))
    return [{"reason": reason, "count": len(group), "keys": group[:examples]}
            for reason, group in sorted(groups.items(), key=lambda g: -len(g[1]))]
