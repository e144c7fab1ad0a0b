"""Reconstruction targets re-decoded from a store's recorded shards.

A store extracted without `--with pixels` still records where its images came
from (`shards`: urls and sample counts in stream order; `keys_file` when its
rows follow a keys file instead) and how they were preprocessed
(`preprocessing`: timm's `create_transform` arguments). This reads those
shards again, decodes the images of the selected rows in worker processes (a
torch DataLoader, one shard per task), applies the recorded transform without
normalisation (the uint8 model input `pixels` would hold) and cuts the
P x P x 3 patch of every selected token. Every decoded sample's `__key__` must
equal the store's `key` of its row, or nothing is returned.

A store is someone's data: its recorded URLs are reopened only when the user
confirms them (`--trust-recorded-shards`), and only as local files or
http(s)/s3 URLs; `pipe:` (a shell command) only ever comes from `--shards`.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vitreg.cache import Store
from vitreg.cache.names import KEY
from vitreg.cache.shardid import local_shard_path, shard_digest
from vitreg.core import InputError, UsageError
from vitreg.core.samples import decode_checked, expand_shards, pixel_transform, shard_samples

from .gather import patch_geometry, pixel_patches

#: Targets larger than this live in an unlinked temporary file, not in memory.
IN_MEMORY_LIMIT = 512 * 2**20


@dataclass(frozen=True)
class ShardTask:
    """The selected rows one worker decodes from one shard."""

    url: str
    #: Stream order: the row of the shard's first sample (sample j is row
    #: first_row + j); None when rows follow a keys file (matched by key).
    first_row: int | None
    rows: np.ndarray  # (m,) the wanted rows, increasing
    keys: list[str]  # the store's key of each wanted row
    patches: list[np.ndarray]  # the grid positions wanted of each row
    preprocessing: dict[str, Any]
    patch_size: int
    grid: tuple[int, int]


class _Tasks(Dataset):
    def __init__(self, tasks: list[ShardTask]) -> None:
        self.tasks = tasks

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, i: int) -> tuple[str, Any]:
        try:
            return "ok", decode_task(self.tasks[i])
        except InputError as exc:  # a sentence for the user, not a worker traceback
            return "error", str(exc)


def _single(batch: Any) -> Any:
    return batch


def decode_task(task: ShardTask) -> dict[int, np.ndarray]:
    """{index into task.rows: (n, p*p*3) uint8 patches} for the rows found in the shard."""
    torch.set_num_threads(1)
    transform = pixel_transform(task.preprocessing)
    where = {int(r): i for i, r in enumerate(task.rows)}
    by_key = {} if task.first_row is not None else {k: i for i, k in enumerate(task.keys)}
    found: dict[int, np.ndarray] = {}
    damage: list = []
    for j, sample in enumerate(shard_samples(task.url, damage)):
        if task.first_row is not None:
            i = where.get(task.first_row + j)
            if i is None:
                continue
            if sample["__key__"] != task.keys[i]:
                raise InputError(
                    f"{task.url}: sample {j} has key {sample['__key__']!r} but the store's row "
                    f"{task.first_row + j} has key {task.keys[i]!r}: these are not the shards "
                    "the store was extracted from (pass the right ones with --shards)")
        else:
            i = by_key.pop(sample["__key__"], None)
            if i is None:
                continue
        found[i] = cut_patches(sample, transform, task, i)
        if len(found) == len(task.rows):
            break
    if task.first_row is not None and len(found) < len(task.rows):
        missing = int(task.rows[min(set(range(len(task.rows))) - set(found))])
        why = f" ({damage[0].reason})" if damage else ""
        raise InputError(f"{task.url} ends before the store's row {missing}{why}: the shard is "
                         "not the one the store was extracted from, or it is damaged")
    return found


def cut_patches(sample: dict[str, Any], transform, task: ShardTask, i: int) -> np.ndarray:
    """Wanted row `i`'s image through the recorded transform, cut into its patches."""
    try:
        rgb, _ = decode_checked(sample)
    except Exception as exc:
        raise InputError(f"{task.url}: sample {sample['__key__']!r} does not decode any more "
                         f"({type(exc).__name__}: {exc}), though the store holds it") from exc
    image = transform(rgb).permute(1, 2, 0).numpy()  # (S, S, 3) uint8, as `pixels`
    patches = task.patches[i]
    return pixel_patches(image[None], np.zeros(patches.size, np.int64), patches,
                         task.patch_size, task.grid)


#: Schemes a URL recorded in a store may have to be reopened: local files and
#: http(s)/s3 objects. Anything else (webdataset's `pipe:` runs its text in a
#: shell; `gs:`, `ais:` and friends start programs) comes only from the user's
#: own command line (--shards), never from a store someone else wrote.
RECORDED_SCHEMES = ("", "file", "http", "https", "s3")


def shard_urls(store: Store, override: str | None = None, *,
               trust_recorded: bool = False) -> list[str]:
    """Where the store's shards are: `override` (the user's brace pattern, or a
    folder holding them under their recorded file names), or, only with
    `trust_recorded`, the URLs the store records; checked to exist."""
    recorded = [str(s["url"]) for s in store.meta.get("shards") or []]
    if not recorded:
        raise InputError(f"store {store.url} records no input shards: its reconstruction "
                         "targets cannot be re-decoded; re-extract it with --with pixels")
    if override:
        urls = _overridden(store, override, recorded)
    else:
        check_recorded(store, recorded, trust_recorded)
        urls = recorded
    missing = [u for u in urls if _looks_local(u) and local_shard_path(u) is None]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise InputError(
            f"store {store.url} has no `pixels`, and {len(missing)} of the {len(urls)} shards "
            f"its images are re-decoded from are not where it says: "
            f"{', '.join(map(repr, missing[:3]))}{more}. Pass --shards PATTERN (e.g. "
            "/data/train-{000..063}.tar, or the folder that now holds them), or re-extract "
            "the store with --with pixels")
    check_digests(store, urls)
    return urls


def _overridden(store: Store, override: str, recorded: list[str]) -> list[str]:
    if os.path.isdir(override):  # the recorded names only pick files inside the user's folder
        urls = [os.path.join(override, os.path.basename(u)) for u in recorded]
    else:
        urls = expand_shards([override])
    if len(urls) != len(recorded):
        raise UsageError(f"--shards {override} names {len(urls)} shard(s) but store "
                         f"{store.url} was extracted from {len(recorded)}: give one for "
                         "each, in the same order")
    return urls


def unsafe_recorded_url(url: str) -> bool:
    """Whether a URL read from a store must not be opened: not a local path, a
    `file://` URL or an http(s)/s3 URL (`pipe:CMD` would run CMD in a shell)."""
    if not url or url == "-" or any(ord(c) < 32 for c in url):
        return True
    return urlsplit(url).scheme.lower() not in RECORDED_SCHEMES


def check_recorded(store: Store, recorded: list[str], trusted: bool) -> None:
    """Refuse recorded URLs that would run a program, always; the others unless
    the user confirmed them (--trust-recorded-shards)."""
    unsafe = [u for u in recorded if unsafe_recorded_url(u)]
    if unsafe:
        raise InputError(
            f"store {store.url} records {len(unsafe)} shard URL(s) such as {unsafe[0][:80]!r} "
            "that are not local files or http(s)/s3 URLs: vitreg never opens those from a "
            "store (a pipe: URL would run a command). Name the shards yourself with --shards "
            "PATTERN, or re-extract the store with --with pixels")
    if not trusted:
        raise UsageError(
            f"store {store.url} has no `pixels`: its reconstruction targets would be re-decoded "
            f"from the {len(recorded)} shard(s) it records, e.g. {recorded[0][:120]!r}. A store "
            "is data from whoever wrote it: confirm those with --trust-recorded-shards, or name "
            "the shards yourself with --shards PATTERN (a brace pattern, or the folder that "
            "holds them)")


def _looks_local(url: str) -> bool:
    return url.startswith("file://") or ("://" not in url and not url.startswith("pipe:"))


def check_digests(store: Store, urls: list[str]) -> None:
    """Refuse a local shard whose tar members differ from the recorded identity."""
    digests = store.meta.get("shard_digests") or [None] * len(urls)
    for url, want in zip(urls, digests):
        path = local_shard_path(url)
        if path is None or not str(want or "").startswith("sha256:"):
            continue
        if shard_digest(path) != want:
            raise InputError(f"shard {url} is not the one store {store.url} was extracted from "
                             "(its tar members differ from the recorded digest); pass the "
                             "original shards with --shards")


def decode_targets(
    store: Store, rows: np.ndarray, patches: np.ndarray, *, shards: str | None = None,
    trust_recorded: bool = False, workers: int = 0,
) -> np.ndarray:
    """(n, p*p*3) uint8: the pixel patch `patches[i]` of row `rows[i]`'s image, re-decoded.

    The same values `pixels` would give (`gather.pixel_patches`); large results
    live in an unlinked temporary file (a memory map), not in memory.
    """
    p, grid = patch_geometry(store)
    urls = shard_urls(store, shards, trust_recorded=trust_recorded)
    out = _allocate((rows.size, p * p * 3))
    if rows.size == 0:
        return out
    order = np.argsort(rows, kind="stable")
    wanted, starts = np.unique(rows[order], return_index=True)
    groups = np.split(order, starts[1:])  # item indices of each wanted row
    keys = np.asarray(store.array(KEY)[:], dtype=object)
    tasks, members = _tasks(store, urls, wanted, groups, keys, patches, p, grid)
    workers = min(workers or min(8, os.cpu_count() or 1), len(tasks))
    loader = DataLoader(_Tasks(tasks), batch_size=None, collate_fn=_single, num_workers=workers)
    filled = np.zeros(wanted.size, bool)
    for t, (kind, value) in enumerate(loader):
        if kind == "error":
            raise InputError(value)
        for i, values in value.items():
            w = members[t][i]
            if not filled[w]:  # the first shard that holds a key wins, as in extract
                out[groups[w]] = values
                filled[w] = True
    if not filled.all():
        row = int(wanted[np.flatnonzero(~filled)[0]])
        raise InputError(f"{int((~filled).sum())} selected row(s) of store {store.url} are in "
                         f"none of its shards (row {row}, key {keys[row]!r}); pass the shards "
                         "it was extracted from with --shards")
    return out


def _tasks(store: Store, urls: list[str], wanted: np.ndarray, groups: list[np.ndarray],
           keys: np.ndarray, patches: np.ndarray, p: int,
           grid: tuple[int, int]) -> tuple[list[ShardTask], list[np.ndarray]]:
    """One task per shard that holds a wanted row, and the wanted rows' indices of each."""
    pre = dict(store.meta.get("preprocessing") or {})
    if not pre:
        raise InputError(f"store {store.url} records no preprocessing: its images cannot be "
                         "re-decoded as the model saw them; re-extract it with --with pixels")
    counts = [int(s["samples"]) for s in store.meta["shards"]]
    by_keys = bool(store.meta.get("keys_file"))
    if by_keys:  # rows follow the keys file: every shard may hold any of them
        shard_of = [np.arange(wanted.size)] * len(urls)
    else:
        offsets = np.concatenate([[0], np.cumsum(counts)])
        shard = np.searchsorted(offsets, wanted, side="right") - 1
        shard_of = [np.flatnonzero(shard == s) for s in range(len(urls))]
    tasks, members = [], []
    for s, idx in enumerate(shard_of):
        if idx.size == 0:
            continue
        tasks.append(ShardTask(
            url=urls[s], first_row=None if by_keys else int(offsets[s]), rows=wanted[idx],
            keys=[str(keys[r]) for r in wanted[idx]],
            patches=[patches[groups[w]].astype(np.int64) for w in idx],
            preprocessing=pre, patch_size=p, grid=grid))
        members.append(idx)
    return tasks, members


def _allocate(shape: tuple[int, int]) -> np.ndarray:
    if shape[0] * shape[1] <= IN_MEMORY_LIMIT:
        return np.empty(shape, np.uint8)
    return np.memmap(tempfile.TemporaryFile(prefix="vitreg-targets-"), dtype=np.uint8,
                     mode="w+", shape=shape)
