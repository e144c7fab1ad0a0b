"""One outlier threshold per model: with --val, train and val use the same value."""

from __future__ import annotations

import numpy as np

from vitreg.cache import open_store
from vitreg.probe import run_probe


def _percentile_98(url: str) -> float:
    store = open_store(url)
    norms = store.array("norms")[:][:, store.geometry.prefix:]
    return float(np.percentile(norms.astype(np.float32), 98))


def test_val_store_uses_the_train_threshold(planted, planted_val, fast):
    r = run_probe("position", planted, val=planted_val, **dict(fast, epochs=1))
    expected = _percentile_98(planted)
    assert r["outlier_threshold"]["from"] == planted
    assert np.isclose(r["outlier_threshold"]["value"], expected, rtol=1e-6)
    for part in ("train", "val"):
        assert np.isclose(r["provenance"][part]["outlier_threshold"]["value"], expected,
                          rtol=1e-6)


def test_threshold_from_another_store(planted, planted_val, fast):
    r = run_probe("position", planted, val=planted_val, threshold_from=planted_val,
                  **dict(fast, epochs=1))
    expected = _percentile_98(planted_val)
    assert r["outlier_threshold"]["from"] == planted_val
    assert np.isclose(r["provenance"]["train"]["outlier_threshold"]["value"], expected,
                      rtol=1e-6)
    assert _percentile_98(planted) != expected
