"""Planning: count every shard's samples from its tar headers and fix each
sample's row before anything is decoded.

The rows of a store are the positions of its samples in the stream (shards
in the order given, then tar order). Counting first lets every process of a
multi-process run, and every resumed run, agree on them without talking.
"""

from __future__ import annotations

import inspect
import os
import re
import tarfile
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
from webdataset import tariterators

from vitreg.core import InputError, UsageError

from .data import ShardDamage, expand_shards, group_members, local_path, shard_samples

#: Members webdataset skips (its `tar_file_iterator` default), matched the same way.
_SKIP_META = re.compile(
    inspect.signature(tariterators.tar_file_iterator).parameters["skip_meta"].default)


@dataclass
class ShardCount:
    url: str
    keys: list[str]
    damage: str | None = None
    #: (n, 2) byte range of each sample's tar members, for local shards: a
    #: decode worker then reads only the samples it owns.
    spans: np.ndarray | None = None


@dataclass
class Plan:
    """Shards, their sample counts and the row of each shard's first sample."""

    shards: list[ShardCount]
    n_rows: int
    duplicates: dict[int, int] = field(default_factory=dict)  # row -> first row with its key
    #: With `--keys`: (n_rows, 2) shard index and sample index of each row,
    #: rows in the keys file's order; None when rows are the stream order.
    selection: np.ndarray | None = None

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.shards]

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum([len(s.keys) for s in self.shards])])

    @property
    def spans(self) -> list[np.ndarray | None]:
        return [s.spans for s in self.shards]

    def shard_info(self) -> list[dict[str, Any]]:
        return [{"url": s.url, "samples": len(s.keys)} for s in self.shards]

    def damaged(self) -> list[dict[str, str]]:
        return [{"url": s.url, "reason": s.damage} for s in self.shards if s.damage]


def _header_members(path: str, damage: list[ShardDamage]) -> Iterator[dict[str, Any]]:
    """The members webdataset would yield, read from the headers alone, with
    the byte range from their header to the end of their padded data.

    A member whose data runs past the end of the file was cut short: the
    stream would fail on it, so the scan stops there too.
    """
    size = os.path.getsize(path)
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                if info.offset_data + info.size > size:
                    raise tarfile.ReadError("unexpected end of data")
                name = info.name
                skip = not info.isreg() or ("/" not in name and name.startswith("__") and name.endswith("__"))
                if not skip and not _SKIP_META.match(name):
                    end = info.offset_data + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
                    yield {"fname": name, "data": None, "__url__": path,
                           "__span__": (info.offset, end)}
    except (tarfile.TarError, OSError) as exc:
        damage.append(ShardDamage(path, f"{type(exc).__name__}: {exc}"))


def count_shard(url: str) -> ShardCount:
    """Keys of a shard's samples, from tar headers for local files (no data
    read), else by streaming it through webdataset."""
    path = local_path(url)
    damage: list[ShardDamage] = []
    spans = None
    if path is None:
        keys = [s["__key__"] for s in shard_samples(url, damage)]
    else:
        samples = list(group_members(_header_members(path, damage)))
        if damage and samples:
            samples.pop()  # the sample the cut went through is dropped, as when streaming
        keys = [s["__key__"] for s in samples]
        spans = np.array([s["__span__"] for s in samples], dtype=np.int64).reshape(-1, 2)
    return ShardCount(url, keys, damage[0].reason if damage else None, spans)


def read_keys(path: str) -> list[str]:
    """Sample keys, one a line (blank lines ignored), refusing a key listed twice."""
    with open(path, encoding="utf-8") as f:
        keys = [line.strip() for line in f if line.strip()]
    if not keys:
        raise InputError(f"{path} lists no keys: write one sample key (`__key__`) a line")
    seen: set[str] = set()
    twice = [k for k in keys if k in seen or seen.add(k)]
    if twice:
        raise InputError(f"{path} lists {len(twice)} key(s) more than once, e.g. {twice[:5]}: "
                         "each key may have one row; remove the repeats")
    return keys


def select_keys(counts: list[ShardCount], keys: list[str], source: str) -> np.ndarray:
    """(len(keys), 2) shard and sample index of each key, first occurrence in the stream."""
    remote = [c.url for c in counts if c.spans is None]
    if remote:
        raise UsageError(f"--keys reads each listed sample by its byte range, so it needs local "
                         f"shard files; {remote[:3]} are not local: copy them, then run again")
    where: dict[str, tuple[int, int]] = {}
    for i, count in enumerate(counts):
        for j, key in enumerate(count.keys):
            where.setdefault(key, (i, j))
    missing = [k for k in keys if k not in where]
    if missing:
        raise InputError(
            f"{len(missing)} of the {len(keys)} keys in {source} are in no shard: "
            f"{', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}. "
            "Check the shards given, or remove those keys from the file")
    return np.array([where[k] for k in keys], dtype=np.int64).reshape(-1, 2)


def plan_shards(shards: list[str], *, limit: int | None = None, keys: str | None = None) -> Plan:
    """Count every shard; rows beyond `limit` are not part of the store.

    With `keys` (a file of sample keys), the rows are those keys, in the
    file's order, read from wherever the shards hold them.
    """
    counts = [count_shard(url) for url in expand_shards(shards)]
    if keys is not None:
        listed = read_keys(keys)[:limit]
        return Plan(counts, len(listed), selection=select_keys(counts, listed, keys))
    n_rows = sum(len(c.keys) for c in counts)
    if limit is not None:
        n_rows = min(n_rows, limit)
    first_row: dict[str, int] = {}
    duplicates = {}
    row = 0
    for count in counts:
        for key in count.keys:
            if row >= n_rows:
                break
            first = first_row.setdefault(key, row)
            if first != row:
                duplicates[row] = first
            row += 1
    return Plan(counts, n_rows, duplicates)
