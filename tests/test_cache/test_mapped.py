"""Row slices read through memory-mapped chunk files equal zarr's own reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import BytesCodec, ZstdCodec

from vitreg.cache import Geometry, StoreFormatError, open_store
from vitreg.cache.arrays import StoreArray
from vitreg.cache.errors import MissingChunkError
from vitreg.cache.mapped import mapped
from vitreg.cache.pack import run_pack
from vitreg.testing import write_store

GEOM = Geometry(registers=1, grid=(2, 3), dim=8, depth=2, img_size=42)
N, CHUNK = 37, 8  # five chunks, the last one partial


@pytest.fixture
def store_url(tmp_path) -> str:
    rng = np.random.default_rng(42)
    tokens = rng.normal(size=(N, GEOM.tokens, GEOM.dim)).astype(np.float16)
    norms = rng.gamma(2.0, size=(N, GEOM.tokens)).astype(np.float32)
    url = write_store(str(tmp_path / "s.zarr"), {"tokens": tokens, "norms": norms},
                      geometry=GEOM, chunk_rows=CHUNK)
    # a chunk at the fill value, stored as vitreg's writer stores it (zarr's
    # default would store no file for it)
    zarr.open_group(url, mode="r+")["tokens"].with_config({"write_empty_chunks": True})[16:24] = 0
    return url


def reference(url: str, name: str) -> np.ndarray:
    """The whole array read by plain zarr, independently of vitreg's reader."""
    return zarr.open_group(url, mode="r")[name][:]


@pytest.mark.parametrize("rows", [
    slice(0, 8), slice(3, 5), slice(5, 30), slice(30, 37), slice(0, None), slice(-4, None),
    slice(36, 37), slice(10, 10), slice(20, 17),
])
def test_row_slices_equal_zarr(store_url, rows):
    reader = open_store(store_url).reader("tokens")
    assert isinstance(reader, StoreArray) and reader.mapped
    got = reader[rows]
    np.testing.assert_array_equal(got, reference(store_url, "tokens")[rows])
    assert got.dtype == np.float16


def test_a_slice_inside_one_chunk_is_a_view_of_the_file(store_url):
    reader = open_store(store_url).reader("tokens")
    view = reader[9:14]
    assert isinstance(view, np.memmap) and not view.flags.writeable
    assert Path(view.filename) == Path(store_url, "tokens", "c", "1", "0", "0").resolve()


def test_a_chunk_of_zeros_reads_as_zeros(store_url):
    assert Path(store_url, "tokens", "c", "2", "0", "0").exists()
    got = open_store(store_url).reader("tokens")[15:25]
    np.testing.assert_array_equal(got, reference(store_url, "tokens")[15:25])
    assert not got[1:9].any()


def test_a_missing_chunk_of_a_complete_store_is_an_error_not_zeros(store_url):
    Path(store_url, "tokens", "c", "2", "0", "0").unlink()
    with pytest.raises(MissingChunkError, match=r"tokens/c/2/0/0 is missing .*`vitreg verify"):
        open_store(store_url).reader("tokens")[15:25]
    np.testing.assert_array_equal(open_store(store_url).reader("tokens")[0:16],
                                  reference(store_url, "tokens")[0:16])  # the others still read


def test_other_indices_go_to_zarr(store_url):
    reader = open_store(store_url).reader("tokens")
    ref = reference(store_url, "tokens")
    np.testing.assert_array_equal(reader[5], ref[5])
    np.testing.assert_array_equal(reader[(slice(2, 9), 0)], ref[2:9, 0])
    np.testing.assert_array_equal(reader[0:9:2], ref[0:9:2])


def test_compressed_arrays_of_a_schema_1_0_store_are_read_by_zarr(tmp_path, monkeypatch):
    """Schema 1.0 compressed its arrays with zstd: no byte layout to map."""
    monkeypatch.setattr("vitreg.cache.create.COMPRESSORS", (ZstdCodec(level=1),))
    tokens = np.random.default_rng(42).normal(size=(N, GEOM.tokens, GEOM.dim)).astype(np.float16)
    url = write_store(str(tmp_path / "old.zarr"), {"tokens": tokens}, geometry=GEOM,
                      chunk_rows=CHUNK)
    store = open_store(url)
    assert not store.reader("tokens").mapped  # zarr decodes it
    np.testing.assert_array_equal(store.reader("tokens")[3:20], tokens[3:20])
    rows = np.array([1, 8, 30])
    np.testing.assert_array_equal(
        np.concatenate([b["tokens"] for b in store.batches(["tokens"], rows=rows)]), tokens[rows])


def test_a_packed_store_is_read_by_zarr(store_url, tmp_path):
    packed = str(tmp_path / "s.zip")
    run_pack(store_url, packed)
    zipped = open_store(packed)
    assert not zipped.reader("tokens").mapped
    np.testing.assert_array_equal(zipped.reader("tokens")[3:20],
                                  open_store(store_url).reader("tokens")[3:20])


def test_big_endian_chunks_are_read_in_their_byte_order(tmp_path):
    values = np.arange(5 * 3 * 4, dtype=">f4").reshape(5, 3, 4)
    array = zarr.create_array(str(tmp_path / "be"), shape=values.shape, chunks=(2, 3, 4),
                              dtype="float32", serializer=BytesCodec(endian="big"),
                              compressors=None)
    array[:] = values
    reader = mapped(zarr.open_array(str(tmp_path / "be"), mode="r"))
    assert reader is not None and reader.dtype == np.dtype(">f4")
    np.testing.assert_array_equal(reader[1:5], values[1:5])


def test_chunking_along_a_second_axis_is_not_mapped(tmp_path):
    array = zarr.create_array(str(tmp_path / "split"), shape=(4, 6), chunks=(2, 3),
                              dtype="float32", compressors=None)
    assert mapped(array) is None


def test_a_truncated_chunk_file_is_an_error_not_garbage(store_url):
    path = Path(store_url, "tokens", "c", "1", "0", "0")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(StoreFormatError, match="damaged"):
        open_store(store_url).reader("tokens")[8:10]


def test_a_rewritten_chunk_leaves_earlier_views_intact(store_url):
    """zarr replaces chunk files atomically: a view keeps the bytes it mapped."""
    before = reference(store_url, "tokens")[0:8]
    view = open_store(store_url).reader("tokens")[0:8]
    zarr.open_group(store_url, mode="r+")["tokens"][0:8] = 1.0
    np.testing.assert_array_equal(view, before)
    assert (open_store(store_url).reader("tokens")[0:8] == 1.0).all()


def test_small_arrays_are_mapped_too(store_url):
    reader = open_store(store_url).reader("norms")
    assert isinstance(reader, StoreArray) and reader.mapped
    np.testing.assert_array_equal(reader[5:30], reference(store_url, "norms")[5:30])


def test_batches_read_through_the_map_equal_zarr(store_url):
    store = open_store(store_url)
    ref = reference(store_url, "tokens")
    rows = np.array([0, 2, 9, 15, 16, 30, 36])
    got = list(store.batches(["tokens", "norms"], rows=rows))
    np.testing.assert_array_equal(np.concatenate([b["row"] for b in got]), rows)
    np.testing.assert_array_equal(np.concatenate([b["tokens"] for b in got]), ref[rows])
    np.testing.assert_array_equal(np.concatenate([b["norms"] for b in got]),
                                  reference(store_url, "norms")[rows])
