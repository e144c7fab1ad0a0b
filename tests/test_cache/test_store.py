"""Creating, validating, writing and reading stores, with no model."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import zarr

from tests.store_edit import edit_array_meta
from vitreg.cache import (
    ChunkWriter,
    Geometry,
    IncompleteStoreError,
    StoreFormatError,
    StoreNotFoundError,
    UnsafeStoreError,
    arrays_for,
    create_store,
    default_chunk_rows,
    open_store,
    stored_arrays,
)
from vitreg.cache.shardfile import OpenFile
from vitreg.testing import synthetic_attrs, write_store

GEOM = Geometry(registers=2, grid=(3, 4), dim=8, depth=2, img_size=48)


def random_arrays(n: int, seed: int = 42) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "tokens": rng.normal(size=(n, GEOM.tokens, GEOM.dim)).astype(np.float16),
        "norms": rng.gamma(2.0, size=(n, GEOM.tokens)).astype(np.float32),
        "pooled/cls": rng.normal(size=(n, GEOM.dim)).astype(np.float32),
        "label": rng.integers(0, 5, n).astype(np.int32),
    }


def test_every_array_has_dimension_names_and_shared_row_chunks(tmp_path):
    root = create_store(str(tmp_path / "s"), geometry=GEOM, n_rows=10, chunk_rows=4,
                        specs=arrays_for(["pixels", "blocks", "qkv"], "all"),
                        attrs=synthetic_attrs(GEOM))
    names = stored_arrays(root)
    assert len(names) == 14
    for name in names:
        array = root[name]
        assert array.metadata.dimension_names[0] == "image"
        assert len(array.metadata.dimension_names) == array.ndim
        assert array.chunks[0] == 4
    assert root["pooled/registers"].shape == (10, 2, 8)
    assert root["pixels"].shape == (10, 48, 48, 3)


def test_zero_registers_get_a_chunk_of_one(tmp_path):
    geom = Geometry(registers=0, grid=(2, 2), dim=4, depth=1, img_size=28)
    root = create_store(str(tmp_path / "s"), geometry=geom, n_rows=3, chunk_rows=8,
                        specs=arrays_for([], "all"), attrs=synthetic_attrs(geom))
    assert root["pooled/registers"].shape == (3, 0, 4)
    assert root["pooled/registers"].chunks == (8, 1, 4)


def test_default_chunk_rows_targets_16_mib():
    vit_s = Geometry(registers=4, grid=(16, 16), dim=384, depth=12, img_size=224)
    rows = default_chunk_rows(vit_s)
    row_bytes = vit_s.tokens * vit_s.dim * 2
    assert rows * row_bytes <= 16 * 2**20 < 2 * rows * row_bytes
    tiny = Geometry(registers=0, grid=(1, 1), dim=2, depth=1, img_size=1)
    assert default_chunk_rows(tiny) == 1024


def test_writer_accepts_rows_in_any_order(tmp_path):
    n = 23
    arrays = random_arrays(n)
    root = create_store(str(tmp_path / "s"), geometry=GEOM, n_rows=n, chunk_rows=5,
                        specs=arrays_for([], "all"), attrs=synthetic_attrs(GEOM))
    writer = ChunkWriter(root, ["tokens", "norms", "pooled/cls", "label", "status", "key", "error"])
    order = np.random.default_rng(0).permutation(n)
    for piece in np.array_split(order, 6):
        values = {k: v[piece] for k, v in arrays.items()}
        values["status"] = np.ones(len(piece), np.uint8)
        values["key"] = np.array([f"k{i}" for i in piece], dtype=object)
        values["error"] = np.array([""] * len(piece), dtype=object)
        writer.put(piece, values)
    writer.close()
    for name, value in arrays.items():
        np.testing.assert_array_equal(root[name][:], value)
    assert list(root["key"][:]) == [f"k{i}" for i in range(n)]


def test_writer_refuses_to_drop_an_unfinished_chunk(tmp_path):
    root = create_store(str(tmp_path / "s"), geometry=GEOM, n_rows=10, chunk_rows=5,
                        specs=arrays_for([], "all"), attrs=synthetic_attrs(GEOM))
    writer = ChunkWriter(root, ["status"])
    writer.put(np.arange(7), {"status": np.ones(7, np.uint8)})
    with pytest.raises(RuntimeError, match=r"chunks \[1\]"):
        writer.close()
    assert list(root["status"][:]) == [1] * 5 + [0] * 5


def test_status_is_written_after_the_data(tmp_path, monkeypatch):
    """Kill the write between data and status: no row may claim to be written."""
    root = create_store(str(tmp_path / "s"), geometry=GEOM, n_rows=4, chunk_rows=4,
                        specs=arrays_for([], "all"), attrs=synthetic_attrs(GEOM))
    writer = ChunkWriter(root, ["norms", "status", "key"])
    order = []
    # numeric arrays are put in place by `shardfile.OpenFile.finish`, strings through zarr
    real_zarr, real_file = type(root["status"]).__setitem__, OpenFile.finish

    def record(path, write):
        order.append(path)
        if path == "status":
            raise OSError(28, "No space left on device")
        write()

    monkeypatch.setattr(type(root["status"]), "__setitem__",
                        lambda self, *a: record(self.path, lambda: real_zarr(self, *a)))
    monkeypatch.setattr(OpenFile, "finish", lambda self, **kw: record(
        self.layout.array.path, lambda: real_file(self, **kw)))
    writer.put(np.arange(4), {"norms": np.ones((4, GEOM.tokens), np.float32),
                              "status": np.ones(4, np.uint8),
                              "key": np.array(list("abcd"), dtype=object)})
    with pytest.raises(OSError, match="No space"):
        writer.close()
    assert order == ["norms", "key", "status"]
    monkeypatch.undo()
    assert (root["status"][:] == 0).all()
    assert not list(tmp_path.rglob("*.partial"))  # the unfinished status file is dropped


def test_reader_batches_only_ok_rows_and_threshold_is_numpys(tmp_path):
    n = 37
    arrays = random_arrays(n)
    status = np.ones(n, np.uint8)
    status[[0, 5, 6, 30]] = 2
    arrays["status"] = status
    url = write_store(str(tmp_path / "s"), arrays, geometry=GEOM, chunk_rows=8)
    store = open_store(url)
    seen = np.concatenate([b["row"] for b in store.batches(["norms", "label"])])
    np.testing.assert_array_equal(seen, np.flatnonzero(status == 1))
    chosen = [b for b in store.batches(["label"], rows=np.array([1, 2, 5, 33]))]
    assert [list(b["row"]) for b in chosen] == [[1, 2], [33]]
    ok_norms = arrays["norms"][status == 1][:, GEOM.prefix:]
    assert store.threshold() == pytest.approx(float(np.percentile(ok_norms, 98)), rel=1e-6)
    recomputed = open_store(url).threshold(percentile=90)
    assert recomputed == pytest.approx(float(np.percentile(ok_norms, 90)), rel=1e-6)
    mask = store.outlier_mask(arrays["norms"])
    assert not mask[:, : GEOM.prefix].any()
    assert store.counts() == {"ok": 33, "failed": 4, "pending": 0}


def test_incomplete_store_needs_allow_partial(tmp_path):
    url = write_store(str(tmp_path / "s"), random_arrays(6), geometry=GEOM, complete=False)
    with pytest.raises(IncompleteStoreError, match="--allow-partial"):
        open_store(url)
    assert open_store(url, allow_partial=True).n_rows == 6


def test_open_refuses_what_is_not_a_vitreg_store(tmp_path):
    with pytest.raises(StoreNotFoundError):
        open_store(str(tmp_path / "missing"))
    zarr.open_group(str(tmp_path / "plain"), mode="w").create_array("x", shape=(2,), dtype="f4")
    with pytest.raises(StoreFormatError, match="not a vitreg store"):
        open_store(str(tmp_path / "plain"))
    url = write_store(str(tmp_path / "s"), random_arrays(4), geometry=GEOM)
    meta_path = Path(url) / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["vitreg"]["schema_version"] = "2.0"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(StoreFormatError, match="schema 2.0"):
        open_store(url)


def test_unknown_codec_is_refused_before_decoding(tmp_path):
    url = write_store(str(tmp_path / "s"), random_arrays(4), geometry=GEOM)
    edit_array_meta(url, "norms",
                    lambda m: m["codecs"].append({"name": "numcodecs.pickle", "configuration": {}}))
    with pytest.raises(UnsafeStoreError, match="pickle"):
        open_store(url)


def test_zarr_v2_store_is_refused(tmp_path):
    zarr.open_group(str(tmp_path / "v2"), mode="w", zarr_format=2).create_array(
        "norms", shape=(2,), dtype="f4")
    with pytest.raises(StoreNotFoundError, match="v2"):
        open_store(str(tmp_path / "v2"))


class CountingReader:
    def __init__(self, reader):
        self.reader, self.calls = reader, 0

    def __getitem__(self, key):
        self.calls += 1
        return self.reader[key]


@pytest.mark.parametrize("budget, per_call", [(1, 1), (3 * 4 * 64, 3), (2**24, 2**24 // (4 * 64))])
def test_batches_read_many_chunks_per_call_but_yield_one_chunk_each(
    tmp_path, monkeypatch, budget, per_call
):
    n, chunk = 41, 4  # 11 chunks
    names = ["norms", "label"]  # 15 float32 + 1 int32 = 64 bytes a row
    arrays = random_arrays(n)
    status = np.ones(n, np.uint8)
    status[[3, 8, 9, 10, 11, 40]] = 2  # chunk 2 (rows 8-11) holds no ok row
    arrays["status"] = status
    store = open_store(write_store(str(tmp_path / "s"), arrays, geometry=GEOM, chunk_rows=chunk))
    monkeypatch.setattr("vitreg.cache.reader.TOKENS_CHUNK_BYTES", budget)
    assert store.chunks_per_read(names) == per_call
    readers = {name: CountingReader(store.reader(name)) for name in names}
    monkeypatch.setattr(store, "reader", readers.__getitem__)
    rows = np.random.default_rng(42).choice(n, 25, replace=False)
    wanted = np.intersect1d(rows, np.flatnonzero(status == 1))
    batches = list(store.batches(names, rows=rows))
    for batch in batches:
        assert (batch["row"] // chunk == batch["chunk_start"] // chunk).all()
        assert batch["chunk_start"] % chunk == 0
        for name in names:
            np.testing.assert_array_equal(batch[name], arrays[name][batch["row"]])
    np.testing.assert_array_equal(np.concatenate([b["row"] for b in batches]), wanted)
    assert len(batches) == len(np.unique(wanted // chunk))
    groups_read = len(np.unique(wanted // (chunk * per_call)))
    assert [r.calls for r in readers.values()] == [groups_read, groups_read]


def test_writer_takes_unsorted_rows_whose_first_and_last_share_a_chunk(tmp_path):
    arrays = random_arrays(12)
    root = create_store(str(tmp_path / "s"), geometry=GEOM, n_rows=12, chunk_rows=4,
                        specs=[s for s in arrays_for([], "all") if s.name in ("norms", "status")],
                        attrs=synthetic_attrs(GEOM))
    writer = ChunkWriter(root, ["norms", "status"])
    for rows in (np.array([0, 9, 1, 5, 2]), np.array([3, 4, 6, 7, 8, 10, 11])):
        writer.put(rows, {"norms": arrays["norms"][rows], "status": np.ones(rows.size, np.uint8)})
    writer.close()
    np.testing.assert_array_equal(root["norms"][:], arrays["norms"])
    assert (root["status"][:] == 1).all()


def test_writer_splits_sorted_rows_into_slices_and_keeps_every_row(tmp_path):
    n = 40
    arrays = random_arrays(n)
    root = create_store(str(tmp_path / "s"), geometry=GEOM, n_rows=n, chunk_rows=4,
                        specs=arrays_for([], "all"), attrs=synthetic_attrs(GEOM))
    writer = ChunkWriter(root, ["tokens", "norms", "status"])
    parts = writer._split(np.arange(6, 19))
    assert [(c, (p.start, p.stop)) for c, p in parts] == [(1, (0, 2)), (2, (2, 6)),
                                                          (3, (6, 10)), (4, (10, 13))]
    for piece in np.array_split(np.arange(n), 3):  # batches of several chunks each
        writer.put(piece, {"tokens": arrays["tokens"][piece], "norms": arrays["norms"][piece],
                           "status": np.ones(len(piece), np.uint8)})
    writer.close()
    np.testing.assert_array_equal(root["tokens"][:], arrays["tokens"])
    np.testing.assert_array_equal(root["norms"][:], arrays["norms"])


def test_a_loop_writer_lets_two_batches_of_many_chunks_be_in_flight(tmp_path, monkeypatch):
    # ViT-L-shaped: a batch of 256 rows is 16 chunks of 16 rows. With a bound
    # of two chunks the loop waited on most of each batch's own writes.
    from vitreg.cache.target import WriteTarget

    n, batch = 1024, 256
    root = create_store(str(tmp_path / "s"), geometry=GEOM, n_rows=n, chunk_rows=16,
                        specs=arrays_for([], "all"), attrs=synthetic_attrs(GEOM))
    release = threading.Event()
    real_write = ChunkWriter._write

    def slow_write(self, *args):
        release.wait(10)  # the disk is busy until the test lets go
        real_write(self, *args)

    monkeypatch.setattr(ChunkWriter, "_write", slow_write)
    writer = WriteTarget.writer(SimpleNamespace(_root=root, names=["status"], rows=(0, n),
                                                chunk_rows=16), batch_rows=batch)
    start = time.perf_counter()
    for first in (0, batch):  # two batches queue without waiting on the disk
        writer.put(np.arange(first, first + batch), {"status": np.ones(batch, np.uint8)})
    assert time.perf_counter() - start < 2 and writer.waited == 0
    release.set()
    for first in (2 * batch, 3 * batch):
        writer.put(np.arange(first, first + batch), {"status": np.ones(batch, np.uint8)})
    writer.close()
    assert (root["status"][:] == 1).all()
