"""Where rows go: the chunk policy along `image` and each writer's row range.

Every array of a store shares its chunking along `image`; `chunk_rows_for_store`
is the one formula that both a real run and `--dry-run` use, and `row_range`
is the one split of a store's rows between writers (whole chunks only, so two
writers never touch one chunk).
"""

from __future__ import annotations

import numpy as np

from .reader import Store
from .schema import Geometry
from .store import default_chunk_rows


def balanced_chunk_rows(target: int, n_rows: int) -> int:
    """At most `target` rows per chunk, spread evenly: zarr stores edge chunks
    whole, so 100 rows in chunks of 64 would store 128 (50 + 50 stores 100)."""
    chunks = -(-n_rows // target)
    return -(-n_rows // chunks)


def chunk_rows_for_store(geometry: Geometry, n_rows: int, chunk_rows: int | None = None) -> int:
    """Rows per chunk of a new store: `chunk_rows` if given, else the default
    for the geometry, balanced over `n_rows`."""
    return chunk_rows or balanced_chunk_rows(default_chunk_rows(geometry), n_rows)


#: Bytes of `tokens` in one shard file of a new store (see cache_schema.md).
SHARD_BYTES = 256 * 2**20
#: Shards a store has at least: a writer holds a shard until all its rows
#: are in, so a store of one shard would be written only at the end (no
#: overlap with the model) and a killed run would keep nothing.
MIN_SHARDS = 8


def shard_rows_for_store(geometry: Geometry, n_rows: int, chunk_rows: int,
                         explicit: bool = False) -> int | None:
    """Rows per shard of a new store: a power-of-two number of chunks holding
    at most `SHARD_BYTES` of `tokens`, and at most 1/`MIN_SHARDS` of the store;
    None (no sharding) when the caller chose the chunk rows (`--chunk-rows`:
    one file per chunk, as before schema 1.5) or a shard would hold one chunk."""
    if explicit:
        return None
    chunk_bytes = chunk_rows * geometry.tokens * geometry.dim * 2
    per_shard = 1
    while 2 * per_shard * chunk_bytes <= SHARD_BYTES:
        per_shard *= 2
    per_shard = min(per_shard, -(-n_rows // chunk_rows) // MIN_SHARDS)
    return per_shard * chunk_rows if per_shard > 1 else None


def row_range(n_rows: int, chunk_rows: int, rank: int = 0, world: int = 1) -> tuple[int, int]:
    """The rows of writer `rank` of `world`: whole files (`chunk_rows` is the
    rows of one file: a shard's, or a chunk's), split as evenly as they allow."""
    chunks = -(-n_rows // chunk_rows)
    first = rank * chunks // world
    last = (rank + 1) * chunks // world
    return first * chunk_rows, min(last * chunk_rows, n_rows)


def array_sizes(store: Store) -> list[tuple[str, tuple, str, int, int]]:
    """(name, shape, dtype, bytes on disk, bytes uncompressed) of every array."""
    rows = []
    recorded = store.meta.get("stored_bytes") if store.complete else None
    for name in store.names:
        array = store.array(name)
        # a complete store records them: a web server cannot list chunk files
        stored = recorded[name] if isinstance(recorded, dict) and name in recorded \
            else array.nbytes_stored()
        itemsize = array.dtype.itemsize if array.dtype.kind not in "OTU" else 0
        raw = int(np.prod(array.shape)) * itemsize
        rows.append((name, array.shape, str(array.dtype), stored, raw))
    return rows
