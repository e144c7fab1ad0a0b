"""Planning: count every shard's samples from its tar headers and fix each
sample's row before anything is decoded.

The rows of a store are the positions of its samples in the stream (shards
in the order given, then tar order). Counting first lets every process of a
multi-process run, and every resumed run, agree on them without talking.
"""

from __future__ import annotations

import inspect
import multiprocessing
import os
import re
import tarfile
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from webdataset import tariterators

from vitreg.cache.shardid import members_digest
from vitreg.core.errors import InputError, UsageError
from vitreg.core.runtime import usable_cores

from .data import (
    MemberLayout,
    ShardDamage,
    ShardStream,
    expand_shards,
    group_members,
    image_members,
    local_path,
    shard_samples,
)
from .model import LoadedModel
from .transforms import eval_transform

#: Members webdataset skips (its `tar_file_iterator` default), matched the same way.
_SKIP_META = re.compile(
    inspect.signature(tariterators.tar_file_iterator).parameters["skip_meta"].default)


@dataclass
class ShardCount:
    url: str
    keys: list[str]
    damage: str | None = None
    #: where each sample's members lie, for local shards: a decode worker
    #: then reads only the samples it owns.
    layout: MemberLayout | None = None
    #: identity of the shard (cache.shardid): its members' names and sizes,
    #: or, for a streamed shard, its keys
    digest: str | None = None


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
    def layouts(self) -> list[MemberLayout | None]:
        return [s.layout for s in self.shards]

    def shard_info(self) -> list[dict[str, Any]]:
        return [{"url": s.url, "samples": len(s.keys)} for s in self.shards]

    def digests(self) -> list[str | None]:
        """Each shard's identity (cache.shardid), in shard order."""
        return [s.digest for s in self.shards]

    def keys(self) -> list[str]:
        """The key of every row, in row order (the keys file's order with `--keys`)."""
        if self.selection is not None:
            return [self.shards[i].keys[j] for i, j in self.selection]
        return [key for s in self.shards for key in s.keys][: self.n_rows]

    def damaged(self) -> list[dict[str, str]]:
        return [{"url": s.url, "reason": s.damage} for s in self.shards if s.damage]


def _header_members(path: str, damage: list[ShardDamage],
                    seen: list[tuple[str, int]]) -> Iterator[dict[str, Any]]:
    """The members webdataset would yield, read from the headers alone, with
    the offset and size of their data.

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
                if info.isreg():
                    seen.append((name, info.size))
                dunder = "/" not in name and name.startswith("__") and name.endswith("__")
                skip = not info.isreg() or dunder
                if not skip and not _SKIP_META.match(name):
                    yield {"fname": name, "data": None, "__url__": path,
                           "__data__": (info.offset_data, info.size)}
    except (tarfile.TarError, OSError) as exc:
        damage.append(ShardDamage(path, f"{type(exc).__name__}: {exc}"))


def count_shard(url: str) -> ShardCount:
    """Keys of a shard's samples, from tar headers for local files (no data
    read), else by streaming it through webdataset."""
    path = local_path(url)
    if path is not None and is_compressed(path):
        path = None  # a .tar.gz: webdataset streams it, there are no byte ranges
    damage: list[ShardDamage] = []
    layout = None
    if path is None:
        samples = [{k: (v if k.startswith("__") else None) for k, v in s.items()}
                   for s in shard_samples(url, damage)]
        keys = [s["__key__"] for s in samples]
        digest = "keys-" + members_digest([(key, 0) for key in keys])
    else:
        seen: list[tuple[str, int]] = []
        samples = list(group_members(_header_members(path, damage, seen)))
        digest = members_digest(seen)
        if damage and samples:
            samples.pop()  # the sample the cut went through is dropped, as when streaming
        keys = [s["__key__"] for s in samples]
        layout = MemberLayout.of(keys, [s["__members__"] for s in samples])
    check_one_image(url, samples)
    return ShardCount(url, keys, damage[0].reason if damage else None, layout, digest)


def count_shards(urls: list[str]) -> list[ShardCount]:
    """`count_shard` of every url, in order; several shards in forked
    processes, one per core. tarfile parses headers in Python, 0.14 ms per
    sample here: about 3 minutes of ImageNet-train on one core, with every
    rank's GPU idle (bench/bench_plan.py: 1.79x on 2 cores)."""
    procs = min(len(urls), planning_processes())
    if procs < 2:
        return [count_shard(url) for url in urls]
    # fork, as the DataLoader's workers: the children only read tars
    with ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("fork")) as pool:
        return list(pool.map(count_shard, urls, chunksize=max(1, len(urls) // (4 * procs))))


def planning_processes() -> int:
    """This process's cores, shared with the other ranks of its node under
    torchrun (each rank plans every shard); 1 where fork is unavailable."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, usable_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def is_compressed(path: str) -> bool:
    """gzip, bzip2 or xz magic bytes."""
    with open(path, "rb") as file:
        head = file.read(6)
    return head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head == b"\xfd7zXZ\x00"


def check_shard_args(shards: list[str]) -> None:
    """Refuse a shard given twice, and one that is a glob the shell did not expand."""
    twice = sorted(url for url, n in Counter(expand_shards(shards)).items() if n > 1)
    if twice:
        raise InputError(f"shard(s) given more than once: {', '.join(twice[:3])}; every sample "
                         "would be there twice: give each shard once")
    for shard in shards:
        if "://" not in shard and not shard.startswith("pipe:") and any(c in shard for c in "*?[") \
                and not os.path.exists(shard):
            raise InputError(
                f"shard {shard!r} looks like a glob pattern that was not expanded (quoted?); "
                "vitreg expands brace patterns (shard-{000..009}.tar) but not *: leave the "
                "pattern unquoted so that the shell expands it, or use braces")


def no_samples_message(plan: Plan) -> str:
    """Why a plan found nothing, shard by shard."""
    reasons = []
    for shard in plan.shards[:5]:
        if shard.damage and "No such file" in shard.damage or (
                local_path(shard.url) is None and "://" not in shard.url
                and not shard.url.startswith("pipe:") and not os.path.exists(shard.url)):
            reasons.append(f"{shard.url}: no such file")
        elif shard.damage:
            reasons.append(f"{shard.url}: not a readable tar ({shard.damage})")
        else:
            reasons.append(f"{shard.url}: a tar with no samples")
    return (f"no samples found in {len(plan.shards)} shard(s): " + "; ".join(reasons)
            + ". Pass webdataset tars (.tar, or .tar.gz) of image files, e.g. made by "
            "`vitreg shards FOLDER --out DIR`")


def check_one_image(url: str, samples: list[dict[str, Any]]) -> None:
    """Refuse samples whose key holds several images: webdataset splits a member
    name at its first dot, so `img.v1.jpg` and `img.v2.jpg` are both key `img`."""
    merged = [(s["__key__"], found) for s in samples if len(found := image_members(s)) > 1]
    if merged:
        shown = "; ".join(f"key {key!r}: {', '.join(f'{key}.{m}' for m in found)}"
                          for key, found in merged[:5])
        more = f" and {len(merged) - 5} more" if len(merged) > 5 else ""
        raise InputError(
            f"{url}: {len(merged)} sample(s) hold several images under one key ({shown}{more}); "
            "a key is the member name up to its first dot, so rename the files to one image per "
            "key without extra dots (img_v1.jpg, img_v2.jpg), e.g. with `vitreg shards`")



def read_keys(path: str) -> list[str]:
    """Sample keys, one a line (blank lines ignored), refusing a key listed twice."""
    try:
        with open(path, encoding="utf-8") as f:
            keys = [line.strip() for line in f if line.strip()]
    except UnicodeDecodeError as exc:
        raise InputError(f"--keys {path} is not a UTF-8 text file ({exc.reason} at byte "
                         f"{exc.start}): write one sample key (`__key__`) a line") from exc
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
    remote = [c.url for c in counts if c.layout is None]
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
    counts = count_shards(expand_shards(shards))
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


def plan_stream(plan: Plan, loaded: LoadedModel, todo: np.ndarray, batch_size: int, *,
                decode_threads: int = 1, raw: bool = False) -> ShardStream:
    """The stream of the rows in `todo`, decoded for `loaded`'s model (with
    `raw`, left encoded for the device); what a run, a dry run and the cost
    measurement all read."""
    return ShardStream(
        plan.urls, offsets=plan.offsets, todo=todo, batch_size=batch_size,
        img_size=loaded.geometry.img_size, transform=eval_transform(loaded.data_config),
        duplicates=plan.duplicates, layouts=plan.layouts, selection=plan.selection,
        decode_threads=decode_threads, raw=raw)
