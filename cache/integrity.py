"""Check every chunk of a store against its `crc32c` checksum (schema 1.3).

Each chunk file ends with the 4-byte crc32c (little-endian) of the bytes
before it, written by zarr's `crc32c` codec. This module reads the files
through the store's own key/value interface, so a local folder, a zip, an
HTTP server and S3 are checked the same way, many chunks at a time, and names
every chunk that is missing, truncated or altered.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import google_crc32c
import numpy as np
import zarr
from zarr.codecs import Crc32cCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

#: Chunks fetched at once: enough to hide an HTTP or S3 round trip, few
#: enough that 16 MiB chunks stay within a few hundred MiB of memory.
CONCURRENCY = 8

CHECKSUM_BYTES = 4


@dataclass
class ChunkReport:
    """What a checksum pass found."""

    checked: int = 0
    bytes: int = 0
    unchecked: list[str] = field(default_factory=list)  # arrays without a checksum codec
    problems: list[str] = field(default_factory=list)


def has_checksums(array: zarr.Array) -> bool:
    return any(isinstance(c, Crc32cCodec) for c in array.metadata.codecs)


def expected_size(array: zarr.Array) -> int | None:
    """Bytes of a chunk file of a fixed-size dtype stored raw, else None."""
    codecs = array.metadata.codecs
    names = [c.to_dict()["name"] for c in codecs]
    if array.dtype.kind not in "biuf" or names != ["bytes", "crc32c"]:
        return None
    return int(np.prod(array.chunks)) * array.dtype.itemsize + CHECKSUM_BYTES


def chunk_keys(name: str, array: zarr.Array) -> Iterator[str]:
    """The store key of every chunk of `array`, in row order."""
    grid = [range(-(-s // c)) for s, c in zip(array.shape, array.chunks)]
    for index in itertools.product(*grid):
        yield f"{name}/{array.metadata.encode_chunk_key(index)}"


def check_chunk(key: str, data: np.ndarray | bytes | None, size: int | None) -> str | None:
    """Why the chunk file `data` at `key` is not intact, or None."""
    if data is None:
        return f"{key}: missing"
    data = np.frombuffer(data, dtype=np.uint8)  # slices without copying 16 MiB
    if len(data) < CHECKSUM_BYTES or (size is not None and len(data) != size):
        return f"{key}: truncated ({len(data)} bytes, expected {size if size else 'more'})"
    stored = int.from_bytes(data[-CHECKSUM_BYTES:].tobytes(), "little")
    if google_crc32c.value(data[:-CHECKSUM_BYTES]) != stored:
        return f"{key}: altered (its crc32c does not match the bytes)"
    return None


async def _check_keys(
    store: zarr.abc.store.Store, keys: list[tuple[str, int | None]], report: ChunkReport
) -> None:
    prototype = default_buffer_prototype()
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one(key: str, size: int | None) -> None:
        async with semaphore:
            buffer = await store.get(key, prototype=prototype)
        data = None if buffer is None else buffer.as_numpy_array()
        problem = check_chunk(key, data, size)
        report.checked += 1
        report.bytes += 0 if data is None else len(data)
        if problem:
            report.problems.append(problem)

    await asyncio.gather(*(one(key, size) for key, size in keys))


def check_checksums(root: zarr.Group, names: list[str], *, skip_missing: bool) -> ChunkReport:
    """Fetch every chunk of `names` and check size and crc32c; `skip_missing`
    leaves out missing chunks (an incomplete store has not written them yet)."""
    report = ChunkReport()
    keys: list[tuple[str, int | None]] = []
    for name in names:
        array = root[name]
        if not has_checksums(array):
            report.unchecked.append(name)
            continue
        keys.extend((key, expected_size(array)) for key in chunk_keys(name, array))
    prefix = f"{root.store_path.path}/" if root.store_path.path else ""
    batch = 1024  # bounds the coroutines alive at once
    for start in range(0, len(keys), batch):
        sync(_check_keys(root.store, [(prefix + k, s) for k, s in keys[start:start + batch]],
                         report))
    if skip_missing:
        report.problems = [p for p in report.problems if not p.endswith(": missing")]
    report.problems.sort()
    return report


def metadata_mismatches(root: zarr.Group) -> list[str]:
    """Arrays whose own `zarr.json` differs from their copy in the root's
    consolidated metadata (what zarr and vitreg read): a tampered or stale copy."""
    prefix = f"{root.store_path.path}/" if root.store_path.path else ""

    async def fetch(key: str) -> dict | None:
        buffer = await root.store.get(prefix + key, prototype=default_buffer_prototype())
        return None if buffer is None else json.loads(buffer.to_bytes())

    root_meta = sync(fetch("zarr.json")) or {}
    consolidated = (root_meta.get("consolidated_metadata") or {}).get("metadata") or {}
    problems = []
    for name, meta in sorted(consolidated.items()):
        try:
            own = sync(fetch(f"{name}/zarr.json"))
        except ValueError:
            own = "unreadable"
        strip = ("consolidated_metadata",)  # a sub-group's own copy, or none
        if not isinstance(own, dict) or (
            {k: v for k, v in own.items() if k not in strip}
            != {k: v for k, v in meta.items() if k not in strip}
        ):
            problems.append(f"{name}/zarr.json: differs from its copy in the root's "
                            "consolidated metadata (vitreg and zarr read the copy)")
    return problems
