"""Selection protocols (issue #25): under `heldout` no choice (epoch, learning rate)
sees the reported split; under `study` early stopping watches the reported split's
top-1 with patience 3, exactly as the study describes."""

from __future__ import annotations

import pytest

from vitreg.probe import run_probe
from vitreg.probe.registry import ProbeError
from vitreg.testing import write_planted_store

from .conftest import GEOMETRY

GRID = {"lr": "0.001,0.03", "batch_size": 64, "epochs": 6, "min_steps": 0, "patience": 2}


@pytest.fixture(scope="module")
def other_val(tmp_path_factory) -> str:
    """Other images of the planted stores' model: a second reported split."""
    path = tmp_path_factory.mktemp("other_val") / "store.zarr"
    return write_planted_store(str(path), n_images=300, geometry=GEOMETRY, seed=2, codes_seed=0)


def _choices(result: dict) -> dict:
    return {k: result[k] for k in ("chosen", "best_epoch", "stopped_early", "epochs_run",
                                   "selection_metrics")}


def test_heldout_choices_do_not_depend_on_the_reported_split(planted, planted_val, other_val):
    a = run_probe("classify", planted, val=planted_val, **GRID)
    b = run_probe("classify", planted, val=other_val, **GRID)
    assert _choices(a) == _choices(b)  # every choice made without the reported images
    assert a["metrics"] != b["metrics"]  # which are scored once, afterwards
    assert a["data"]["selection"]["protocol"] == "heldout"
    assert a["data"]["selection"]["early_stopping_on"].startswith("held-out")
    for head in ("cls", "normal", "outlier"):
        grid = a["chosen"][head]["grid"]
        assert set(grid) == {"0.001", "0.03"}
        # the grid's scores are the held-out part's, not the reported ones
        assert a["selection_metrics"][head]["all"]["top1"] == max(grid.values())


def test_study_protocol_stops_on_the_reported_top1_with_patience_3(planted, planted_val):
    r = run_probe("position", planted, val=planted_val, protocol="study", lr=0.003,
                  batch_size=64, epochs=30, min_steps=0)
    assert r["data"]["selection"] == {
        "protocol": "study", "trained_on": "training images", "grid_chosen_on": None,
        "early_stopping_on": "reported split", "reported_on": "val"}
    for category in ("normal", "outlier"):
        curve = [c["val"]["position"]["all"]["top1"] for c in r["curves"][category]]
        best = 0  # the study's rule, computed here: the first epoch of the best top-1 ...
        for epoch, value in enumerate(curve):
            if value > curve[best]:
                best = epoch
        # ... and training stops 3 epochs without improvement after it (or at 30)
        assert len(curve) == min(30, best + 1 + 3), curve
        assert r["fits"][category]["best_epoch"]["position"] == best + 1
        assert r["metrics"][category]["top1"] == pytest.approx(curve[best])


def test_study_protocol_with_a_grid_chooses_the_rate_on_held_out_training_images(
        planted, planted_val, other_val):
    a = run_probe("classify", planted, val=planted_val, protocol="study", **GRID)
    b = run_probe("classify", planted, val=other_val, protocol="study", **GRID)
    assert a["chosen"] == b["chosen"]  # the rate: never the reported split
    assert a["data"]["selection"]["grid_chosen_on"].startswith("held-out 0.1")
    assert a["data"]["selection"]["early_stopping_on"] == "reported split"
    # then each head is trained once more at its rate on every training image
    assert all(set(c["val"]) == {"cls", "normal", "outlier"} for c in a["curves"]
               if len({v["lr"] for v in a["chosen"].values()}) == 1)


def test_linear_probe_without_grid_or_early_stopping_uses_every_training_image(planted):
    r = run_probe("linear", planted, batch_size=64, epochs=2)
    assert r["data"]["selection"]["protocol"] == "no selection"
    assert r["data"]["selection"]["grid_chosen_on"] is None
    assert r["data"]["selection"]["early_stopping_on"] is None
    assert r["counts"]["train"]["labelled"] == r["split"]["train_images"]


def test_too_few_training_images_to_hold_out_is_explained(tmp_path):
    store = write_planted_store(str(tmp_path / "s.zarr"), n_images=2, geometry=GEOMETRY)
    with pytest.raises(ProbeError, match="1 training image.*at least 2"):
        run_probe("linear", store, backend="sklearn")  # a grid of C to choose from



def test_sklearn_chooses_its_regularisation_on_held_out_training_images(planted, planted_val,
                                                                        other_val):
    a = run_probe("linear", planted, val=planted_val, backend="sklearn", sklearn_c="0.01,10")
    b = run_probe("linear", planted, val=other_val, backend="sklearn", sklearn_c="0.01,10")
    assert a["chosen"] == b["chosen"] and a["selection_metrics"] == b["selection_metrics"]
    assert a["metrics"] != b["metrics"]
    assert a["data"]["selection"]["grid_chosen_on"].startswith("held-out")
    assert a["data"]["selection"]["early_stopping_on"] is None
