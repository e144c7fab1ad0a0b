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
from zarr.codecs import Crc32cCodec, ShardingCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from .guard import unwrap

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


def chunk_codecs(array: zarr.Array) -> list:
    """The codecs of one chunk: inside the shard, for a sharded array (1.4)."""
    codecs = list(array.metadata.codecs)
    if len(codecs) == 1 and isinstance(codecs[0], ShardingCodec):
        return list(codecs[0].codecs)
    return codecs


def chunks_per_file(array: zarr.Array) -> int:
    """Chunks in one file: a shard's, or 1."""
    return int(np.prod(array.shards)) // int(np.prod(array.chunks)) if array.shards else 1


def has_checksums(array: zarr.Array) -> bool:
    return any(isinstance(c, Crc32cCodec) for c in chunk_codecs(array))


def expected_size(array: zarr.Array) -> int | None:
    """Bytes of a chunk of a fixed-size dtype stored raw, else None."""
    codecs = chunk_codecs(array)
    names = [c.to_dict()["name"] for c in codecs]
    if array.dtype.kind not in "biuf" or names != ["bytes", "crc32c"]:
        return None
    return int(np.prod(array.chunks)) * array.dtype.itemsize + CHECKSUM_BYTES


def chunk_keys(name: str, array: zarr.Array) -> Iterator[str]:
    """The store key of every chunk (shard) file of `array`, in row order."""
    grid = [range(-(-s // c)) for s, c in zip(array.shape, array.shards or array.chunks)]
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


def check_shard(key: str, data: np.ndarray | bytes | None, size: int | None,
                per_file: int) -> list[str]:
    """Why the shard file `data` at `key` or its chunks are not intact: its
    index (an (offset, nbytes) pair per chunk, then its own crc32c, at the
    end), then each stored chunk as `check_chunk` checks a chunk file."""
    if data is None:
        return [f"{key}: missing"]
    data = np.frombuffer(data, dtype=np.uint8)
    index_bytes = 16 * per_file + CHECKSUM_BYTES
    problem = check_chunk(f"{key} (shard index)", data[len(data) - index_bytes:],
                          index_bytes) if len(data) >= index_bytes else \
        f"{key}: truncated ({len(data)} bytes, shorter than its shard index)"
    if problem:
        return [problem]
    index = data[len(data) - index_bytes: -CHECKSUM_BYTES].view("<u8").reshape(-1, 2)
    problems = []
    for i, (offset, nbytes) in enumerate(index.tolist()):
        if offset == nbytes == 2**64 - 1:
            continue  # a chunk at the fill value: not stored
        if offset + nbytes > len(data) - index_bytes:
            problems.append(f"{key}: chunk {i} lies outside the file (truncated)")
            continue
        problem = check_chunk(f"{key} chunk {i}", data[offset: offset + nbytes], size)
        if problem:
            problems.append(problem)
    return problems


async def _check_keys(
    store: zarr.abc.store.Store, keys: list[tuple[str, int | None, int]], report: ChunkReport
) -> None:
    prototype = default_buffer_prototype()
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one(key: str, size: int | None, per_file: int) -> None:
        async with semaphore:
            buffer = await store.get(key, prototype=prototype)
        data = None if buffer is None else buffer.as_numpy_array()
        if per_file > 1:
            report.problems.extend(check_shard(key, data, size, per_file))
        else:
            problem = check_chunk(key, data, size)
            if problem:
                report.problems.append(problem)
        report.checked += 1
        report.bytes += 0 if data is None else len(data)

    await asyncio.gather(*(one(*entry) for entry in keys))


def check_checksums(root: zarr.Group, names: list[str], *, skip_missing: bool) -> ChunkReport:
    """Fetch every chunk of `names` and check size and crc32c; `skip_missing`
    leaves out missing chunks (an incomplete store has not written them yet)."""
    report = ChunkReport()
    keys: list[tuple[str, int | None, int]] = []
    for name in names:
        array = root[name]
        if not has_checksums(array):
            report.unchecked.append(name)
            continue
        size, per_file = expected_size(array), chunks_per_file(array)
        keys.extend((key, size, per_file) for key in chunk_keys(name, array))
    prefix = f"{root.store_path.path}/" if root.store_path.path else ""
    batch = 1024  # bounds the coroutines alive at once
    for start in range(0, len(keys), batch):
        part = [(prefix + k, s, n) for k, s, n in keys[start:start + batch]]
        sync(_check_keys(unwrap(root.store), part, report))
    if skip_missing:
        report.problems = [p for p in report.problems if not p.endswith(": missing")]
    report.problems.sort()
    return report


def metadata_mismatches(root: zarr.Group) -> list[str]:
    """Arrays whose own `zarr.json` differs from their copy in the root's
    consolidated metadata (what zarr and vitreg read): a tampered or stale copy."""
    prefix = f"{root.store_path.path}/" if root.store_path.path else ""

    async def fetch(key: str) -> dict | None:
        buffer = await unwrap(root.store).get(prefix + key, prototype=default_buffer_prototype())
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
