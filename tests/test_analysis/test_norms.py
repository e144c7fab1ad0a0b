"""Norm statistics against numpy/scipy on stores with planted outliers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats as sps

from vitreg.analysis import run_norms
from vitreg.analysis.common import sample_rows
from vitreg.analysis.norms import bimodality_coefficient
from vitreg.cache import open_store

from .conftest import make_store, planted_count, stored_bytes


def test_threshold_is_numpy_percentile(planted, tmp_path):
    result = run_norms([planted.url], out=tmp_path / "out", images=0)
    (stats,) = result["stats"].values()
    patch = planted.arrays["norms"][:, planted.geometry.prefix:]
    assert stats["threshold"] == pytest.approx(float(np.percentile(patch, 98.0)), rel=1e-6)
    assert stats["median"] == pytest.approx(float(np.median(patch)))
    assert stats["max"] == pytest.approx(float(patch.max()))
    assert stats["cls_median"] == 3.0 and stats["register_median"] == 4.0


def test_planted_outliers_counted_exactly(planted, tmp_path):
    result = run_norms([planted.url], out=tmp_path / "out", images=0)
    (stats,) = result["stats"].values()
    k = planted_count(planted.arrays["norms"].shape[0] * planted.geometry.patches)
    assert len(planted.outliers) == k
    assert round(stats["fraction_above_threshold"] * stats["patch_tokens"]) == k
    data = json.loads((tmp_path / "out" / "norms.json").read_text())
    counts = data["stores"][0]["patch_counts"]
    assert sum(counts) == stats["patch_tokens"]
    assert (tmp_path / "out" / "norms.png").stat().st_size > 10_000


def test_bimodality_matches_scipy():
    x = np.random.default_rng(42).gamma(2.0, size=5000)
    g = sps.skew(x, bias=False)
    k = sps.kurtosis(x, bias=False)
    n = x.size
    expected = (g**2 + 1) / (k + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3)))
    assert bimodality_coefficient(x) == pytest.approx(expected, rel=1e-9)


def test_sample_is_seeded_subset(planted, tmp_path):
    result = run_norms([planted.url], out=tmp_path / "out", images=10, seed=42)
    (stats,) = result["stats"].values()
    rows = sample_rows(open_store(planted.url), 10, 42)
    assert rows.size == 10 and np.array_equal(rows, sample_rows(open_store(planted.url), 10, 42))
    patch = planted.arrays["norms"][rows][:, planted.geometry.prefix:]
    assert stats["images"] == 10
    assert stats["median"] == pytest.approx(float(np.median(patch)))


def test_norms_reads_norms_only(tmp_path, read_log):
    rng = np.random.default_rng(42)
    # a store that also holds tokens: norms must not open them
    with_tokens = make_store(tmp_path / "t.zarr", extras=False)
    import zarr

    root = zarr.open_group(with_tokens.url, mode="r+")
    g = with_tokens.geometry
    tokens = root.create_array("tokens", shape=(24, g.tokens, g.dim), chunks=(8, g.tokens, g.dim),
                               dtype="float16", dimension_names=("image", "token", "dim"))
    tokens[:] = rng.normal(size=tokens.shape).astype(np.float16)
    read_log.reads.clear()
    run_norms([with_tokens.url], out=tmp_path / "out", images=0)
    assert read_log.arrays_read() <= {"norms", "status"}
    assert read_log.chunk_bytes("tokens") == 0
    assert read_log.chunk_bytes("norms") == stored_bytes(with_tokens.url, "norms")
