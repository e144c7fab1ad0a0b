"""Maps put planted tokens where they are planted."""

from __future__ import annotations

import json

import numpy as np

from vitreg.analysis import run_maps

from .conftest import make_store


def _json(path):
    return json.loads(path.read_text())


def test_maps_find_planted_tokens(planted, tmp_path):
    out = tmp_path / "out"
    result = run_maps([planted.url], out=out, top=1, images=0)
    key = f"{planted.peak_row:06d}"
    (stats,) = result["stats"].values()
    assert stats["images_drawn"] == [key]
    gh, gw = planted.geometry.grid
    entry = _json(out / f"maps_{key}.json")["stores"][0]
    norm = np.array(entry["norm"])
    assert norm.shape == (gh, gw)
    assert np.unravel_index(norm.argmax(), norm.shape) == divmod(planted.peak_patch, gw)
    want = np.zeros(gh * gw, dtype=bool)
    want[[i for r, i in planted.outliers if r == planted.peak_row]] = True
    assert np.array_equal(np.array(entry["outlier"]).ravel(), want)
    attention = np.array(entry["attention"])
    peak = planted.attention_peak[planted.peak_row]
    assert np.unravel_index(attention.argmax(), attention.shape) == divmod(peak, gw)
    qkv = _json(out / f"qkv_{key}.json")["stores"][0]
    assert np.allclose(np.array(qkv["k"]), 2 * norm, rtol=2e-3)


def test_outlier_heat_map_and_first_block(planted, tmp_path):
    out = tmp_path / "out"
    result = run_maps([planted.url], out=out, indices=[0], images=0, block_images=0)
    n = planted.arrays["norms"].shape[0]
    counts = np.zeros(planted.geometry.patches)
    for _, idx in planted.outliers:
        counts[idx] += 1
    fraction = np.array(_json(out / "outlier_positions.json")["stores"][0]["fraction"])
    assert np.allclose(fraction.ravel(), counts / n)
    (stats,) = result["stats"].values()
    assert stats["first_high_norm_block"] == 3  # conftest plants them from block 3 on
    assert any(p.name.startswith("blocks_") for p in result["figures"])


def test_side_by_side_and_high_resolution(planted, tmp_path):
    """A 57x57 grid (798 px at patch 14) store without pixels, next to the planted one."""
    hires = make_store(tmp_path / "hires.zarr", n=3, grid=(57, 57), registers=0, extras=False)
    out = tmp_path / "out"
    result = run_maps([planted.url, hires.url], out=out, keys=["000001", "000002"], images=0)
    assert any("no `pixels`" in note for note in result["notes"])
    entry = _json(out / "maps_000002.json")["stores"]
    assert np.array(entry[1]["norm"]).shape == (57, 57)
    assert len(entry) == 2


def test_maps_skip_stores_without_the_key(planted, tmp_path):
    small = make_store(tmp_path / "small.zarr", n=2, extras=False)
    out = tmp_path / "out"
    run_maps([small.url, planted.url], out=out, keys=["000010"], images=0)
    entry = _json(out / "maps_000010.json")["stores"]
    assert len(entry) == 1  # only the planted store holds image 000010


def test_per_block_qkv_maps_beside_output_norms(planted, tmp_path):
    out = tmp_path / "out"
    result = run_maps([planted.url], out=out, keys=["000000"], images=0, block_images=0)
    (figure,) = [p for p in result["figures"] if p.name.startswith("blocks_qkv_")]
    drawn = _json(figure.with_suffix(".json"))
    g = planted.geometry
    stored = planted.arrays["blocks/qkv_norms"][0, ..., g.prefix:].astype(np.float32)
    for i, name in enumerate(("query", "key", "value")):
        np.testing.assert_allclose(np.array(drawn[name]), stored[:, i].reshape(-1, *g.grid))
    output = planted.arrays["blocks/norms"][0, :, g.prefix:].astype(np.float32)
    np.testing.assert_allclose(np.array(drawn["output"]), output.reshape(-1, *g.grid))
