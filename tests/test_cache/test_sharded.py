"""Sharded stores (schema 1.5): few files, whole-shard writes, and every
reader still reads one row without fetching a whole shard."""

from __future__ import annotations

import os

import numpy as np
import pytest
import xarray as xr
import zarr
import zarr.storage

from vitreg.cache import ChunkWriter, Geometry, arrays_for, create_store, open_store
from vitreg.cache.layout import row_range, shard_rows_for_store
from vitreg.cache.mapped import mapped
from vitreg.cache.store import write_rows
from vitreg.testing import synthetic_attrs, write_store

GEOM = Geometry(registers=1, grid=(2, 3), dim=8, depth=2, img_size=42)
N, CHUNK, SHARD = 37, 4, 16  # three shard files, the last one partial
GEOM_ROW_BYTES = 2016  # tokens bytes per row of tests.tiny_models.tiny_dinov2_reg4
VIT_L = Geometry(registers=4, grid=(16, 16), dim=1024, depth=24, img_size=224)


@pytest.fixture
def sharded(tmp_path) -> tuple[str, np.ndarray]:
    tokens = np.random.default_rng(0).normal(size=(N, GEOM.tokens, GEOM.dim)).astype(np.float16)
    url = write_store(str(tmp_path / "s.zarr"), {"tokens": tokens}, geometry=GEOM,
                      chunk_rows=CHUNK, shard_rows=SHARD)
    return url, tokens


def test_a_sharded_store_has_one_file_per_shard(sharded):
    url, tokens = sharded
    root = zarr.open_group(url, mode="r")
    assert root["tokens"].shards[0] == SHARD and root["tokens"].chunks[0] == CHUNK
    assert write_rows(root["status"]) == SHARD
    assert len(os.listdir(os.path.join(url, "tokens", "c"))) == 3
    np.testing.assert_array_equal(open_store(url).array("tokens")[:], tokens)


@pytest.mark.parametrize("rows", [slice(0, 4), slice(5, 6), slice(3, 30), slice(33, 37),
                                  slice(0, None), slice(36, 37)])
def test_the_memory_maps_read_inner_chunks_by_the_shard_index(sharded, rows):
    url, tokens = sharded
    array = mapped(zarr.open_group(url, mode="r")["tokens"])
    assert array is not None and array.per_file == SHARD // CHUNK
    np.testing.assert_array_equal(array[rows], tokens[rows])


def test_one_mapped_row_is_a_map_of_its_chunk_only(sharded):
    url, tokens = sharded
    array = mapped(zarr.open_group(url, mode="r")["tokens"])
    chunk = array.chunk(5)  # shard 1, inner chunk 1
    # inner chunk 1 starts after chunk 0 (and its crc32c, where the store has one)
    assert isinstance(chunk, np.memmap) and chunk.offset in (CHUNK * tokens[0].nbytes,
                                                             CHUNK * tokens[0].nbytes + 4)
    assert chunk.shape == (CHUNK, GEOM.tokens, GEOM.dim)
    np.testing.assert_array_equal(chunk, tokens[20:24])


def test_a_chunk_left_at_the_fill_value_reads_as_it(tmp_path):
    tokens = np.ones((N, GEOM.tokens, GEOM.dim), np.float16)
    url = write_store(str(tmp_path / "s.zarr"), {"tokens": tokens}, geometry=GEOM,
                      chunk_rows=CHUNK, shard_rows=SHARD)
    zarr.open_group(url, mode="r+")["tokens"][16:20] = 0  # zarr drops that inner chunk
    array = mapped(zarr.open_group(url, mode="r")["tokens"])
    assert not array[16:20].any() and array[20:24].all()


def test_zarr_reads_one_row_without_fetching_the_shard(sharded, monkeypatch):
    url, tokens = sharded
    fetched: list[int] = []
    real_get = zarr.storage.LocalStore.get

    async def counting_get(self, key, prototype=None, byte_range=None):
        value = await real_get(self, key, prototype, byte_range)
        if key.startswith("tokens/c") and value is not None:
            fetched.append(len(value))
        return value

    monkeypatch.setattr(zarr.storage.LocalStore, "get", counting_get)
    row = zarr.open_group(url, mode="r")["tokens"][20]
    np.testing.assert_array_equal(row, tokens[20])
    shard_bytes = SHARD * tokens[0].nbytes
    assert sum(fetched) < shard_bytes / 2, fetched
    fetched.clear()
    ds = xr.open_dataset(url, engine="zarr", consolidated=False, chunks=None, cache=False)
    np.testing.assert_array_equal(ds["tokens"][20].values, tokens[20])
    assert sum(fetched) < shard_bytes / 2, fetched


def test_writes_and_rank_ranges_are_whole_shards(tmp_path):
    root = create_store(str(tmp_path / "s"), geometry=GEOM, n_rows=N, chunk_rows=CHUNK,
                        shard_rows=SHARD, specs=arrays_for([], "all"),
                        attrs=synthetic_attrs(GEOM))
    writer = ChunkWriter(root, ["status"])
    assert writer.chunk_rows == SHARD
    writer.put(np.arange(0, 12), {"status": np.ones(12, np.uint8)})
    for fut, _ in writer._pending:
        fut.result()
    # 3 of 4 chunks written to a temporary file: the shard is not in place
    assert (root["status"][:] == 0).all() and 0 in writer._files
    writer.abort()
    assert not [p for p in (tmp_path / "s").rglob("*") if p.is_file() and "partial" in p.name]
    ranges = [row_range(N, write_rows(root["status"]), r, 2) for r in range(2)]
    assert ranges == [(0, 16), (16, 37)]


def test_the_shard_policy():
    # ViT-L/14 at 224: chunks of 16 rows (8.6 MB of tokens), 16 chunks a shard
    assert shard_rows_for_store(VIT_L, 1_281_167, 16) == 256
    assert shard_rows_for_store(VIT_L, 40 * 16, 16) == 5 * 16  # at least 8 shards a store
    assert shard_rows_for_store(VIT_L, 4000, 16) == 16 * 16
    assert shard_rows_for_store(VIT_L, 15 * 16, 16) is None  # fewer than 16 chunks: one a file
    assert shard_rows_for_store(VIT_L, 1000, 16, explicit=True) is None


def test_extract_writes_a_sharded_store_equal_to_an_unsharded_one(tmp_path, monkeypatch):
    import tests.tiny_models  # noqa: F401
    from tests.conftest import image_samples, write_shard
    from vitreg.cache import layout
    from vitreg.extract.run import run_extract

    shard = write_shard(tmp_path / "s.tar", image_samples(21))
    args = dict(shards=[shard], model="tiny_dinov2_reg4", weights="random", batch_size=3,
                progress=False, with_options=["pixels"])
    run_extract(out=str(tmp_path / "plain"), chunk_rows=4, **args)
    # the default policy, scaled down: chunks of 4 rows, shards of 8
    monkeypatch.setattr(layout, "default_chunk_rows", lambda geometry: 4)
    monkeypatch.setattr(layout, "SHARD_BYTES", 8 * GEOM_ROW_BYTES)
    monkeypatch.setattr(layout, "MIN_SHARDS", 2)
    for rank in (1, 0):  # two independent jobs, one shard-aligned range each
        run_extract(out=str(tmp_path / "sharded"), rank=rank, world_size=2, **args)
    plain, sharded = open_store(str(tmp_path / "plain")), open_store(str(tmp_path / "sharded"))
    assert sharded.complete and sharded.array("tokens").shards[0] == 8
    for name in plain.names:
        a, b = plain.array(name)[:], sharded.array(name)[:]
        assert a.dtype == b.dtype and (a == b).all(), name


def test_verify_checks_every_chunk_of_a_shard(sharded):
    from vitreg.cache.integrity import check_checksums

    url, _ = sharded
    root = zarr.open_group(url, mode="r")
    report = check_checksums(root, ["tokens", "status"], skip_missing=False)
    assert not report.problems and not report.unchecked and report.checked == 6
    path = os.path.join(url, "tokens", "c", "1", "0", "0")
    data = bytearray(open(path, "rb").read())
    data[CHUNK * GEOM.tokens * GEOM.dim * 2 + 4 + 10] ^= 0xFF  # a byte of chunk 1 of shard 1
    open(path, "wb").write(bytes(data))
    problems = check_checksums(root, ["tokens"], skip_missing=False).problems
    assert problems == ["tokens/c/1/0/0 chunk 1: altered (its crc32c does not match the bytes)"]
