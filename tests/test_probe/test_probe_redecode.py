"""Reconstruction targets re-decoded from a store's recorded shards equal the
`pixels` that extract stored, and reconstruct gives the same result either way."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import tests.tiny_models  # noqa: F401
from tests.conftest import image_samples, write_shard
from vitreg.cache import open_store
from vitreg.core import InputError, UsageError
from vitreg.extract.run import run_extract
from vitreg.probe import run_probe
from vitreg.probe.gather import patch_geometry, pixel_patches
from vitreg.probe.redecode import ShardTask, decode_targets, decode_task

FAST = {"epochs": 2, "min_steps": 0, "lr": 1e-2, "batch_size": 64}


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    write_shard(folder / "part-000.tar", image_samples(9, start=0))
    write_shard(folder / "part-001.tar", image_samples(7, start=9))
    return folder


def _extract(shard_dir, out, with_options=("pixels",), **kwargs) -> str:
    run_extract(shards=[str(shard_dir / "part-000.tar"), str(shard_dir / "part-001.tar")],
                model="tiny_dinov2_reg4", out=str(out), weights="random",
                with_options=list(with_options), batch_size=8, progress=False, **kwargs)
    return str(out)


@pytest.fixture(scope="module")
def store_with_pixels(shard_dir, tmp_path_factory):
    return _extract(shard_dir, tmp_path_factory.mktemp("store") / "s.zarr")


def every_patch(store):
    """Every (row, patch) of the ok rows, and what `pixels` holds for them."""
    p, grid = patch_geometry(store)
    ok = store.ok_rows()
    n_patch = grid[0] * grid[1]
    rows = np.repeat(ok, n_patch)
    patches = np.tile(np.arange(n_patch), ok.size)
    pixels = store.array("pixels")[:]
    return rows, patches, pixel_patches(pixels, rows, patches, p, grid)


def test_redecoded_patches_equal_stored_pixels(store_with_pixels):
    store = open_store(store_with_pixels)
    rows, patches, expected = every_patch(store)
    order = np.random.default_rng(0).permutation(rows.size)  # any item order
    got = decode_targets(store, rows[order], patches[order], trust_recorded=True, workers=2)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected[order])


def test_reconstruct_without_pixels_matches_with_them(store_with_pixels):
    with_pixels = run_probe("reconstruct", store_with_pixels, targets="pixels", **FAST)
    redecoded = run_probe("reconstruct", store_with_pixels, targets="shards",
                          trust_recorded_shards=True, decode_workers=1, **FAST)
    assert with_pixels["targets"] == "pixels" and redecoded["targets"] == "shards"
    assert redecoded["metrics"] == with_pixels["metrics"]
    assert redecoded["data"]["redecoded"][0]["tokens"] == sum(
        c["normal"] + c["outlier"] for c in redecoded["counts"].values())


def test_a_store_without_pixels_reconstructs_as_one_with_them(store_with_pixels, shard_dir,
                                                               tmp_path):
    bare = _extract(shard_dir, tmp_path / "bare.zarr", with_options=())
    assert "pixels" not in open_store(bare)
    result = run_probe("reconstruct", bare, trust_recorded_shards=True, decode_workers=2,
                       **FAST)
    assert result["targets"] == "shards"
    assert result["metrics"] == run_probe("reconstruct", store_with_pixels, **FAST)["metrics"]


def test_moved_shards_are_named_and_found_with_shards_option(store_with_pixels, shard_dir,
                                                             tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(store_with_pixels, tmp_path / "s.zarr")
    store_url = str(tmp_path / "s.zarr")
    shutil.move(str(shard_dir), moved)
    try:
        store = open_store(store_url)
        rows, patches, expected = every_patch(store)
        with pytest.raises(InputError, match="--shards PATTERN") as err:
            decode_targets(store, rows, patches, trust_recorded=True)
        assert "part-000.tar" in str(err.value)
        for where in (str(moved), str(moved / "part-{000..001}.tar")):
            got = decode_targets(store, rows, patches, shards=where, workers=1)
            np.testing.assert_array_equal(got, expected)
        with pytest.raises(UsageError, match="names 1 shard"):
            decode_targets(store, rows, patches, shards=str(moved / "part-000.tar"))
        with pytest.raises(InputError, match="not the one"):  # recorded digest differs
            decode_targets(store, rows, patches, shards=str(moved / "part-{001,000}.tar"))
    finally:
        shutil.move(str(moved), shard_dir)


def test_a_sample_whose_key_differs_from_the_store_is_refused(store_with_pixels):
    store = open_store(store_with_pixels)
    p, grid = patch_geometry(store)
    url = store.meta["shards"][0]["url"]
    task = ShardTask(url=url, first_row=0, rows=np.array([1]), keys=["not-sample00001"],
                     patches=[np.array([0])], preprocessing=store.meta["preprocessing"],
                     patch_size=p, grid=grid)
    with pytest.raises(InputError, match="'sample00001' but the store's row 1"):
        decode_task(task)


def test_keys_file_store_rows_are_found_by_key(shard_dir, tmp_path):
    listed = ["sample00012", "sample00003", "sample00000", "sample00010"]
    keys = tmp_path / "keys.txt"
    keys.write_text("\n".join(listed) + "\n")
    store = open_store(_extract(shard_dir, tmp_path / "k.zarr", keys_file=str(keys)))
    assert list(store.array("key")[:]) == listed
    rows, patches, expected = every_patch(store)
    np.testing.assert_array_equal(
        decode_targets(store, rows, patches, trust_recorded=True, workers=1), expected)
