"""The README's Python blocks run as written, against a store at the path they name."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from vitreg.cache import Geometry, open_store
from vitreg.cache.pack import run_pack
from vitreg.testing import write_planted_store

README = Path(__file__).resolve().parents[2] / "README.md"
GEOMETRY = Geometry(registers=2, grid=(4, 4), dim=16, depth=2, img_size=32)


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.fixture
def readme_stores(tmp_path, monkeypatch):
    """stores/dinov2-s-reg4-val.zarr and .zip under a fresh working directory."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stores").mkdir()
    url = write_planted_store(str(tmp_path / "stores/dinov2-s-reg4-val.zarr"), n_images=48,
                              geometry=GEOMETRY, seed=0)
    run_pack(url, str(tmp_path / "stores/dinov2-s-reg4-val.zip"))
    return url


def test_every_python_block_runs_as_written(readme_stores, monkeypatch):
    blocks = python_blocks()
    assert len(blocks) >= 2 and any("xr.open_zarr" in b for b in blocks)
    # The extraction example names pretrained weights and 64 shards, which a
    # test cannot download: its config is built and checked as written, and
    # only the run itself is replaced by a recorder.
    runs = []
    monkeypatch.setattr("vitreg.extract.run.run_extract", lambda config: runs.append(config))
    for block in blocks:
        namespace: dict = {}
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own README
    # the xarray block's results, against the geometry by hand: [CLS], 2 registers, 4 x 4 patches
    assert namespace["register_norms"].shape == (48, 2)
    assert namespace["patch_norms"].shape == (48, 16)
    assert namespace["corner"].shape == (48, 1)
    assert list(namespace["pooled"].data_vars) == ["cls", "patch_mean", "registers"]
    assert namespace["by_key"].sizes["key"] == 48
    [config] = runs
    assert config.token_mode == "sampled:64" and config.with_options == ("pixels",)
    assert config.model == "vit_small_patch14_reg4_dinov2.lvd142m"


def test_coordinates_name_every_token(readme_stores):
    full = open_store("stores/dinov2-s-reg4-val.zip").to_xarray()
    assert list(full.token_kind.values) == ["cls", "register", "register"] + ["patch"] * 16
    patch = np.arange(16)
    np.testing.assert_array_equal(full.token_row.values[3:], patch // 4)
    np.testing.assert_array_equal(full.token_col.values[3:], patch % 4)
    assert (full.token_row.values[:3] == -1).all()
    np.testing.assert_array_equal(full.patch_row.values, patch // 4)
    store = open_store("stores/dinov2-s-reg4-val.zarr")
    np.testing.assert_array_equal(full["label"].values, store.array("label")[:])
    assert list(full["key"].values) == list(store.array("key")[:])
    np.testing.assert_array_equal(full["pooled/registers"].values,
                                  store.array("pooled/registers")[:])
