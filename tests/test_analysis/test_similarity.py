"""Redundancy ratio on stores with a planted neighbour-similarity shift."""

from __future__ import annotations

import numpy as np
import pytest

from vitreg.analysis import run_similarity
from vitreg.testing import write_store

from .conftest import make_store


def _shifted(tmp_path, n_out_high: int, n_norm_high: int):
    """The planted store, rewritten with `n_out_high` outliers and `n_norm_high` normal
    tokens at neighbour similarity 0.95 (all others below 0.8)."""
    planted = make_store(tmp_path / "base.zarr", extras=False)
    g = planted.geometry
    cos = planted.arrays["neighbor_cos"].copy()
    outlier = np.zeros(cos.shape, dtype=bool)
    for row, idx in planted.outliers:
        outlier[row, idx] = True
    out_idx, norm_idx = np.flatnonzero(outlier.ravel()), np.flatnonzero(~outlier.ravel())
    flat = cos.reshape(-1)
    flat[out_idx[:n_out_high]] = 0.95
    flat[np.random.default_rng(42).choice(norm_idx, n_norm_high, replace=False)] = 0.95
    arrays = {**planted.arrays, "neighbor_cos": cos}
    url = write_store(str(tmp_path / "shift.zarr"), arrays, geometry=g, chunk_rows=8)
    return url, cos, outlier


def test_planted_ratio_with_absolute_cut(tmp_path):
    url, _, outlier = _shifted(tmp_path, n_out_high=20, n_norm_high=150)
    result = run_similarity([url], out=tmp_path / "out", images=0, redundant_cut=0.9)
    (stats,) = result["stats"].values()
    planted_ratio = (20 / outlier.sum()) / (150 / (~outlier).sum())
    assert stats["outliers"] == outlier.sum()
    assert stats["ratio"] == pytest.approx(planted_ratio, rel=1e-9)
    assert stats["cut_percentile_of_normal"] is None
    assert (tmp_path / "out" / "similarity.png").exists()
    assert (tmp_path / "out" / "similarity.json").exists()


def test_percentile_cut_is_numpy(tmp_path):
    url, cos, outlier = _shifted(tmp_path, n_out_high=12, n_norm_high=0)
    result = run_similarity([url], out=tmp_path / "out", images=0, redundant_percentile=90)
    (stats,) = result["stats"].values()
    normal = cos[~outlier].astype(np.float32)
    cut = np.percentile(normal, 90)
    assert stats["cut"] == pytest.approx(float(cut))
    expected = (cos[outlier] > cut).mean() / (normal > cut).mean()
    assert stats["ratio"] == pytest.approx(float(expected), rel=1e-9)


def test_similarity_reads_only_what_it_needs(planted, tmp_path, read_log):
    read_log.reads.clear()
    run_similarity([planted.url], out=tmp_path / "out", images=0)
    assert read_log.arrays_read() <= {"norms", "neighbor_cos", "status"}
