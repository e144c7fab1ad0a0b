"""Each probe recovers what was planted, and the torch and sklearn backends agree.

Planted (vitreg.testing): normal patch tokens encode their position and
their pixel patch and not the class; outlier tokens (exactly the top 2% norms)
encode the class and neither position nor pixels; [CLS] encodes the class;
the pooled registers encode the class strongly, pooled [CLS] weakly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vitreg.cache import SCHEMA_VERSION
from vitreg.probe import run_probe

#: Torch vs sklearn tolerances: top-1 within 0.10 (absolute), MSE within 25%
#: (relative). Chance-level accuracies on ~130 validation tokens have a
#: standard error of about 0.02, so 0.10 leaves room for both estimates.
TOP1_TOL = 0.10
MSE_REL_TOL = 0.25


@pytest.fixture(scope="module")
def results(planted, fast, fast_reconstruct, tmp_path_factory):
    """Every probe on the planted store, with both backends (computed once)."""
    out = tmp_path_factory.mktemp("results")
    options = {"position": fast, "reconstruct": fast_reconstruct, "classify": fast,
               "linear": {"batch_size": 64, "epochs": 12}}
    runs = {}
    for kind in ("position", "reconstruct", "classify", "linear"):
        for backend in ("torch", "sklearn"):
            opts = dict(options[kind])
            runs[kind, backend] = run_probe(
                kind, planted, out=str(out / f"{kind}-{backend}.json"), backend=backend, **opts
            )
    return runs


def test_position_recovers_planted_positions(results):
    m = results["position", "torch"]["metrics"]
    chance = results["position", "torch"]["chance_top1"]
    assert m["normal"]["top1"] > 0.9
    assert m["outlier"]["top1"] < chance + 0.1  # chance is 1/16
    assert m["normal"]["distance"] < 0.3
    assert m["outlier"]["distance"] > 1.0
    assert m["normal"]["count"] == m["outlier"]["count"] > 100


def test_reconstruct_recovers_planted_pixels(results):
    r = results["reconstruct", "torch"]
    m = r["metrics"]
    # Normal tokens carry a linear code of their patch: only rounding and the
    # token noise remain. Outliers carry nothing: about the pixel variance.
    assert m["normal"]["mse"] < 10.0
    assert m["outlier"]["mse"] > 150.0
    assert m["outlier"]["l2"] > 4 * m["normal"]["l2"]
    assert "0-255" in r["units"]["l2"] and r["patch_pixels"] == [8, 8, 3]


def test_classify_outliers_hold_the_class(results):
    r = results["classify", "torch"]
    m = r["metrics"]
    assert m["outlier"]["top1"] > 0.9
    assert m["cls"]["top1"] > 0.9
    assert m["normal"]["top1"] < 0.45  # 4 classes: chance 0.25
    assert r["images_used"]["train"] > 100 and r["images_used"]["val"] > 20


def test_linear_registers_carry_the_class(results):
    m = results["linear", "torch"]["metrics"]
    assert m["patch_mean+registers"]["top1"] > 0.95
    assert m["cls+patch_mean+registers"]["top1"] > 0.95
    assert m["cls+patch_mean"]["top1"] < m["patch_mean+registers"]["top1"] - 0.1


@pytest.mark.parametrize("kind,head,key", [
    ("position", "normal", "top1"), ("position", "outlier", "top1"),
    ("classify", "cls", "top1"), ("classify", "normal", "top1"), ("classify", "outlier", "top1"),
    ("linear", "cls+patch_mean", "top1"), ("linear", "patch_mean+registers", "top1"),
    ("linear", "cls+patch_mean+registers", "top1"),
])
def test_torch_and_sklearn_agree_on_accuracy(results, kind, head, key):
    a = results[kind, "torch"]["metrics"][head][key]
    b = results[kind, "sklearn"]["metrics"][head][key]
    assert abs(a - b) <= TOP1_TOL, (kind, head, a, b)


@pytest.mark.parametrize("head", ["normal", "outlier"])
def test_torch_and_sklearn_agree_on_reconstruction(results, head):
    a = results["reconstruct", "torch"]["metrics"][head]["mse"]
    b = results["reconstruct", "sklearn"]["metrics"][head]["mse"]
    assert abs(a - b) <= MSE_REL_TOL * max(a, b), (head, a, b)


def test_results_json_has_the_shape_the_report_reads(results, tmp_path):
    r = results["position", "torch"]
    on_disk = json.loads(Path(r["config"]["out"]).read_text())
    assert on_disk == r
    for key in ("probe", "store", "val_store", "config", "counts", "metrics", "curves",
                "elapsed_s", "backend"):
        assert key in r, key
    assert r["store"] == {"model": "synthetic", "weights": "synthetic", "weights_sha256": None,
                          "schema_version": SCHEMA_VERSION, "url": r["config"]["store"]}
    assert r["val_store"] is None and r["backend"] == "torch"
    assert set(r["metrics"]) == {"normal", "outlier"}
    assert {"top1", "distance"} <= set(r["metrics"]["normal"])
    assert set(results["reconstruct", "torch"]["metrics"]["outlier"]) >= {"mse", "l2"}
    assert set(results["classify", "torch"]["metrics"]) == {"cls", "normal", "outlier"}
    assert r["config"]["epochs"] == 12 and r["config"]["patience"] == 3
    assert r["config"]["mse_weight"] == 0.5 and r["config"]["seed"] == 42
    assert set(r["curves"]) == {"normal", "outlier"}  # one head per token category
    curves = r["curves"]["normal"]
    assert [c["epoch"] for c in curves] == list(range(1, len(curves) + 1))
    assert {"lr", "train_loss", "val", "passes", "steps"} <= set(curves[0])
    assert r["counts"]["train"]["normal"] == r["counts"]["train"]["outlier"]
    assert r["split"]["train_images"] + r["split"]["val_images"] == 2000
    prov = r["provenance"]["train"]
    assert prov["outlier_threshold"]["percentile"] == 98.0 and prov["rows"]["ok"] == 2000
    assert results["position", "sklearn"]["backend"] == "sklearn"


def test_val_store_instead_of_a_split(planted, planted_val, fast):
    r = run_probe("position", planted, val=planted_val, **fast)
    assert r["split"]["mode"] == "val_store"
    assert r["split"]["train_images"] == 2000 and r["split"]["val_images"] == 500
    assert r["val_store"]["url"] == planted_val
    assert r["metrics"]["normal"]["top1"] > 0.9


def test_streaming_and_in_memory_give_identical_results(planted, fast):
    opts = dict(fast, epochs=3)
    kept = run_probe("position", planted, in_memory="yes", **opts)
    streamed = run_probe("position", planted, in_memory="no", **opts)
    assert kept["data"]["in_memory"] and not streamed["data"]["in_memory"]
    assert kept["metrics"] == streamed["metrics"]
    for category in ("normal", "outlier"):
        assert kept["curves"][category][-1]["train_loss"] == \
            streamed["curves"][category][-1]["train_loss"]


def test_memory_budget_switches_to_streaming(planted, fast):
    r = run_probe("position", planted, memory_budget=0, **dict(fast, epochs=1))
    assert r["data"]["in_memory"] is False


def test_same_seed_same_result_other_seed_other_split(planted, fast):
    a = run_probe("classify", planted, **dict(fast, epochs=2))
    b = run_probe("classify", planted, **dict(fast, epochs=2))
    c = run_probe("classify", planted, seed=7, **dict(fast, epochs=2))
    assert a["metrics"] == b["metrics"]
    assert a["counts"] == b["counts"]
    assert c["counts"] != a["counts"]
