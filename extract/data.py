"""Shards -> samples -> decoded uint8 batches, in a deterministic order.

Every sample's row in the store is its position in the stream (shards in the
order given, then tar order). Each DataLoader worker decodes only the batches
it owns (batch b belongs to worker b % W), so the DataLoader's round-robin
hands batches back in stream order whatever W is. For a local shard the plan
knows each sample's byte range, and a worker reads only its own samples; other
shards (pipes, URLs) are streamed whole by every worker.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from vitreg.cache.names import ERROR, KEY, LABEL
from vitreg.cache.shardid import local_shard_path as local_path
from vitreg.core.samples import (  # noqa: F401 - re-exported for extract's modules
    IMAGE_EXTS,
    ShardDamage,
    decode_checked,
    decode_image,
    expand_shards,
    group_members,
    image_members,
    shard_samples,
    to_rgb,
)


@dataclass
class MemberLayout:
    """Where the members of a local shard's samples lie, from the plan's
    header scan: a worker reads a sample's bytes in one read and slices them,
    without parsing tar headers again (tarfile's PAX parsing took 0.17 CPU
    ms per sample, 6% of a decode worker's time; bench/bench_host.py, 5)."""

    keys: list[str]
    first: np.ndarray  # (n + 1,) index of each sample's first member
    offset: np.ndarray  # (m,) byte offset of each member's data
    size: np.ndarray  # (m,) its size in bytes
    ext: np.ndarray  # (m,) index into `exts`
    exts: tuple[str, ...]

    @classmethod
    def of(cls, keys: list[str], members: list[list[tuple[str, int, int]]]) -> MemberLayout:
        """From each sample's (extension, data offset, size) members."""
        flat = [m for sample in members for m in sample]
        exts = tuple(sorted({ext for ext, _, _ in flat}))
        index = {ext: i for i, ext in enumerate(exts)}
        first = np.concatenate([[0], np.cumsum([len(m) for m in members])]).astype(np.int64)
        where = np.array([(o, n) for _, o, n in flat], dtype=np.int64).reshape(-1, 2)
        return cls(keys, first, where[:, 0], where[:, 1],
                   np.array([index[e] for e, _, _ in flat], dtype=np.int32), exts)

    def read(self, file: io.BufferedReader, sample: int, url: str) -> dict[str, Any]:
        """Sample `sample` as webdataset's stream gives it: key, url, and the
        bytes of each member by extension."""
        a, b = int(self.first[sample]), int(self.first[sample + 1])
        start = int(self.offset[a])
        stop = int(self.offset[b - 1] + self.size[b - 1])
        file.seek(start)
        data = file.read(stop - start)
        if len(data) != stop - start:
            raise ValueError(f"{url} is shorter than when it was planned: "
                             f"bytes {start}-{stop} are missing")
        out: dict[str, Any] = {"__key__": self.keys[sample], "__url__": url}
        for j in range(a, b):
            at = int(self.offset[j]) - start
            out[self.exts[self.ext[j]]] = data[at: at + int(self.size[j])]
        return out


def read_label(sample: dict[str, Any]) -> tuple[int, str]:
    """(label, warning): `cls` member, else a `label` in `json`, else -1.

    A label that is not an integer >= -1 becomes -1 with a warning: the
    image itself is still good."""
    if "cls" in sample:
        text = bytes(sample["cls"]).decode(errors="replace").strip()
        try:
            label = int(text)
        except ValueError:
            return -1, f"warning: label {text[:40]!r} in .cls is not an integer; stored -1"
    elif "json" in sample:
        try:
            meta = json.loads(sample["json"])
        except ValueError:
            return -1, "warning: the .json member is not JSON; label stored -1"
        if not (isinstance(meta, dict) and isinstance(meta.get("label"), int)):
            return -1, ""
        label = meta["label"]
    else:
        return -1, ""
    if label < -1 or label > np.iinfo(np.int32).max:
        return -1, f"warning: label {label} is out of range (-1 or a class index); stored -1"
    return label, ""


class ShardStream(IterableDataset):
    """Batches of decoded images with their rows, keys, labels and errors.

    Only the rows in `todo` (a boolean mask over the store's rows) are decoded:
    a resumed run, or one process of many, skips the rest. Shards are opened
    only if they hold a row to do, starting at their first row `offsets[i]`.
    `layouts[i]`, when known, says where each sample of shard i lies.
    `decode_threads` > 1 decodes each batch's samples in that many threads.
    `selection` (rows -> shard index, sample index; `--keys`) reads rows in
    row order from local shards by byte range, wherever they lie in the tars.
    `raw` (`--decode gpu`): batches carry each sample's encoded image bytes
    under "encoded" (None for a row that failed already) and no "image";
    the loop decodes them on the device (`extract.gpudecode`).
    """

    def __init__(
        self, urls: list[str], *, offsets: np.ndarray, todo: np.ndarray, batch_size: int,
        transform: Callable[[Image.Image], torch.Tensor], img_size: int,
        duplicates: dict[int, int] | None = None,
        layouts: list[MemberLayout | None] | None = None,
        decode_threads: int = 1, selection: np.ndarray | None = None, raw: bool = False,
    ) -> None:
        self.urls = urls
        self.raw = raw
        self.selection = selection
        self.decode_threads = decode_threads
        self.layouts = layouts or [None] * len(urls)
        self.offsets = offsets
        self.todo = todo
        self.batch_size = batch_size
        self.transform = transform
        self.img_size = img_size
        self.duplicates = duplicates or {}

    def _owned(self) -> Iterator[tuple[int, dict[str, Any]]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        n_rows = len(self.todo)
        if self.selection is not None:
            rows = np.arange(n_rows)
            mine = (rows // self.batch_size) % workers == worker
            yield from self._selected(rows[self.todo & mine])
            return
        for i in range(len(self.urls)):
            start, stop = int(self.offsets[i]), min(int(self.offsets[i + 1]), n_rows)
            mine = self.todo[start:stop] & ((np.arange(start, stop) // self.batch_size) % workers
                                            == worker)
            if not mine.any():
                continue
            for row, sample in self._samples(i, start, stop, mine):
                if row in self.duplicates:
                    sample["__duplicate_of__"] = self.duplicates[row]
                yield row, sample

    def _samples(self, i: int, start: int, stop: int,
                 mine: np.ndarray) -> Iterator[tuple[int, dict[str, Any]]]:
        """Shard i's samples at the rows `start + flatnonzero(mine)`."""
        url, layout = self.urls[i], self.layouts[i]
        path = local_path(url) if layout is not None else None
        if path is None:
            for row, sample in zip(range(start, stop), shard_samples(url)):
                if mine[row - start]:
                    yield row, sample
            return
        with open(path, "rb") as file:
            for local in np.flatnonzero(mine):
                yield start + int(local), layout.read(file, int(local), url)

    def _selected(self, rows: np.ndarray) -> Iterator[tuple[int, dict[str, Any]]]:
        """The samples of `rows` through the selection, each shard file opened once."""
        files: dict[int, io.BufferedReader] = {}
        try:
            for row in rows:
                shard, index = (int(v) for v in self.selection[row])
                if shard not in files:
                    files[shard] = open(local_path(self.urls[shard]), "rb")
                yield int(row), self.layouts[shard].read(files[shard], index, self.urls[shard])
        finally:
            for file in files.values():
                file.close()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        # Threads decode the samples of a batch side by side: PIL releases the
        # GIL while it decodes and resizes. The pool lives in the iterating
        # process (never across a fork).
        with ThreadPoolExecutor(self.decode_threads) if self.decode_threads > 1 else \
                nullcontext() as pool:
            batch: list[tuple[int, dict[str, Any]]] = []
            for row, sample in self._owned():
                if batch and row // self.batch_size != batch[0][0] // self.batch_size:
                    yield self._collate(batch, pool)
                    batch = []
                batch.append((row, sample))
            if batch:
                yield self._collate(batch, pool)

    def _collate(self, items: list[tuple[int, dict[str, Any]]],
                 pool: ThreadPoolExecutor | None = None) -> dict[str, Any]:
        samples = [sample for _, sample in items]
        decoded = list(pool.map(self._decode, samples) if pool else map(self._decode, samples))
        batch = {
            "row": torch.tensor([r for r, _ in items], dtype=torch.int64),
            KEY: [s["__key__"] for s in samples],
            LABEL: torch.tensor([label for _, _, label, _ in decoded], dtype=torch.int32),
            ERROR: [error for _, error, _, _ in decoded],
            "warning": [warning for _, _, _, warning in decoded],
        }
        if self.raw:
            batch["encoded"] = [image for image, _, _, _ in decoded]
            return batch
        size = self.img_size
        batch["image"] = torch.zeros((len(items), 3, size, size), dtype=torch.uint8)
        for i, (image, _, _, _) in enumerate(decoded):
            if image is not None:
                batch["image"][i] = image
        return batch

    def _decode(self, sample: dict[str, Any]
                ) -> tuple[torch.Tensor | bytes | None, str, int, str]:
        """(uint8 image, or with `raw` its encoded bytes, or None; error or "",
        label, warning or "") of one sample."""
        image, error, warning = None, "", ""
        if "__duplicate_of__" in sample:
            error = f"duplicate key: row {sample['__duplicate_of__']} has the same key"
        try:
            if not error and self.raw:
                found = image_members(sample)
                if not found:
                    members = sorted(k for k in sample if not k.startswith("__"))
                    raise ValueError(f"no image member (members: {members})")
                image = bytes(sample[found[0]])
            elif not error:
                rgb, warning = decode_checked(sample)
                image = self.transform(rgb)
        except Exception as exc:  # any decode failure becomes a failed row
            error = _reason("decode", exc)
        label, label_warning = read_label(sample)
        return image, error, label, "; ".join(w for w in (warning, label_warning) if w)


def _reason(stage: str, exc: Exception) -> str:
    # Object addresses ("<_io.BytesIO object at 0x7f...>") would make two
    # runs over the same input store different error strings.
    text = re.sub(r"<[^<>]* at 0x[0-9a-f]+>", "<image bytes>", str(exc))
    return f"{stage}: {type(exc).__name__}: {text}"
