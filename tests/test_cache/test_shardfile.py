"""`cache.shardfile` and the writer built on it write the files zarr writes, byte for byte."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import Crc32cCodec

from vitreg.cache import ChunkWriter, Geometry, arrays_for, create_store, shardfile
from vitreg.cache.shardfile import crc32c, file_layout, write_file
from vitreg.testing import synthetic_attrs

GEOM = Geometry(registers=2, grid=(2, 2), dim=8, depth=1, img_size=28)


def chunk_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "zarr.json"}


@pytest.mark.parametrize(("n", "chunk", "shard", "checksum"), [
    (64, 8, None, True), (61, 8, None, True), (64, 8, 32, True), (61, 8, 32, True),
    (45, 8, 32, True), (45, 8, 32, False),
])
@pytest.mark.parametrize("dtype", ["float16", "uint8", "string"])
def test_a_file_is_the_one_zarr_writes(tmp_path, n, chunk, shard, checksum, dtype):
    rng = np.random.default_rng(42)
    if dtype == "string":
        data = np.array([f"k{i}\u00e9" if i % 3 else "" for i in range(n)], dtype=object)
        shape = (n,)
    else:
        shape = (n, 3, 5)
        data = (rng.normal(size=shape) * 50).astype(dtype)
    text = dtype == "string"
    for tag in ("zarr", "ours"):
        group = zarr.open_group(tmp_path / tag, mode="w", zarr_format=3)
        array = group.create_array(
            "x", shape=shape, chunks=(chunk, *shape[1:]),
            shards=(shard, *shape[1:]) if shard else None, dtype=str if text else dtype,
            compressors=(Crc32cCodec(),) if checksum else (), fill_value="" if text else 0,
        ).with_config({"write_empty_chunks": True})
        layout = file_layout(array)
        assert layout is not None
        step = shard or chunk
        for lo in range(0, n, step):
            if tag == "zarr":
                array[lo: lo + step] = data[lo: lo + step]
            else:
                write_file(layout, lo, data[lo: lo + step])
    assert chunk_files(tmp_path / "ours") == chunk_files(tmp_path / "zarr")
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "ours" / "x", mode="r")[:], data)


def write_both(root: Path, data: np.ndarray, chunk: int, shard: int) -> None:
    """`data` through zarr into root/zarr and through `write_file` into root/ours."""
    for tag in ("zarr", "ours"):
        group = zarr.open_group(root / tag, mode="w", zarr_format=3)
        array = group.create_array(
            "x", shape=data.shape, chunks=(chunk, *data.shape[1:]),
            shards=(shard, *data.shape[1:]), dtype=data.dtype, compressors=(Crc32cCodec(),),
            fill_value=0).with_config({"write_empty_chunks": True})
        for lo in range(0, len(data), shard):
            if tag == "zarr":
                array[lo: lo + shard] = data[lo: lo + shard]
            else:
                write_file(file_layout(array), lo, data[lo: lo + shard])


@pytest.mark.parametrize("slice_bytes", [7, 120, 240, 241, 1 << 20])
@pytest.mark.parametrize("module", ["crc32c", "google_crc32c"])
def test_a_chunk_hashed_and_written_in_slices_is_the_one_zarr_writes(
        tmp_path, monkeypatch, slice_bytes, module):
    """Chunks of 240 bytes (8 rows of 3 x 5 float16) hashed and written a
    slice at a time, slices that divide it and slices that do not, the last
    chunk padded; by either checksum package (their running CRCs must chain)."""
    extend = {"crc32c": lambda crc, data: pytest.importorskip("crc32c").crc32c(data, crc),
              "google_crc32c": pytest.importorskip("google_crc32c").extend}[module]
    monkeypatch.setattr(shardfile, "SLICE_BYTES", slice_bytes)
    monkeypatch.setattr(shardfile, "_crc32c_extend", extend)
    data = (np.random.default_rng(42).normal(size=(45, 3, 5)) * 50).astype("float16")
    write_both(tmp_path, data, chunk=8, shard=32)
    assert chunk_files(tmp_path / "ours") == chunk_files(tmp_path / "zarr")


def test_the_checksum_is_crc32c():
    # RFC 3720 (iSCSI), B.4: 32 bytes of zeros
    assert crc32c(np.zeros(32, np.uint8)) == (0x8A9136AA).to_bytes(4, "little")


def test_arrays_it_does_not_know_go_through_zarr(tmp_path):
    group = zarr.open_group(tmp_path, mode="w", zarr_format=3)
    compressed = group.create_array("z", shape=(8, 2), chunks=(4, 2), dtype="float32")  # zstd
    across = group.create_array("a", shape=(8, 4), chunks=(4, 2), dtype="float32",
                                compressors=())
    filled = group.create_array("f", shape=(8,), chunks=(4,), dtype="float32", compressors=(),
                                fill_value=1.0)
    assert file_layout(compressed) is None and file_layout(across) is None
    assert file_layout(filled) is None  # edge padding would not be the fill value


def store_rows(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(42)
    values = {}
    for spec in arrays_for([], "all"):
        shape = (n, *spec.row_shape(GEOM, 0))
        if spec.dtype == "string":
            values[spec.name] = np.array([f"key{i}" for i in range(n)], dtype=object)
        else:
            values[spec.name] = (rng.normal(size=shape) * 10).astype(spec.dtype)
    values["error"][::5] = "decode: broken"
    return values


@pytest.mark.parametrize("shard", [None, 32])
@pytest.mark.parametrize("lend", [False, True])
def test_the_writer_writes_the_store_plain_zarr_writes(tmp_path, shard, lend):
    """Before `shardfile` every array went through zarr: the new writer (two
    threads, lent or copied rows, batches across chunks and shards) leaves
    the same bytes in every chunk file."""
    n, chunk = 77, 8
    values = store_rows(n)
    stores = {}
    for tag in ("zarr", "ours"):
        root = create_store(str(tmp_path / tag), geometry=GEOM, n_rows=n, chunk_rows=chunk,
                            shard_rows=shard, specs=arrays_for([], "all"),
                            attrs=synthetic_attrs(GEOM))
        writer = ChunkWriter(root, list(values), threads=1 if tag == "zarr" else 2)
        if tag == "zarr":
            writer.layouts = dict.fromkeys(writer.layouts)
        else:
            assert all(writer.layouts.values())  # every array of a store is written here
        lent = []
        for lo in range(0, n, 20):  # batches of 20 rows: 2.5 chunks, not shard-aligned
            rows = np.arange(lo, min(lo + 20, n))
            lent.append(writer.put(rows, {k: v[rows] for k, v in values.items()},
                                   lend=lend and tag == "ours"))
        writer.close()
        assert all(not f.running() for item in lent for f in item.futures)
        stores[tag] = chunk_files(tmp_path / tag)
    assert stores["ours"] == stores["zarr"]
    assert not [name for name in stores["ours"] if "partial" in name]


def test_lent_rows_are_written_in_place_and_copied_rows_are_not(tmp_path):
    n, chunk = 32, 8
    values = store_rows(n)
    root = create_store(str(tmp_path / "s"), geometry=GEOM, n_rows=n, chunk_rows=chunk,
                        specs=arrays_for([], "all"), attrs=synthetic_attrs(GEOM))
    writer = ChunkWriter(root, list(values))
    rows = np.arange(4, 20)  # half of chunk 0, chunk 1, half of chunk 2
    lent = writer.put(rows, {k: v[rows] for k, v in values.items()}, lend=True)
    assert len(lent.futures) == 1  # chunk 1 only: the halves are copied
    lent.wait()
    rest = np.r_[0:4, 20:32]
    writer.put(rest, {k: v[rest] for k, v in values.items()}, lend=True)
    writer.close()
    np.testing.assert_array_equal(root["tokens"][:], values["tokens"])
    assert list(root["key"][:]) == list(values["key"])
