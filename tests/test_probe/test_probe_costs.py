"""A probe's estimate, priced with a training step measured here, is within 3x
of the time the probe then takes here; estimates scale with the model."""

from __future__ import annotations

import time

import pytest

from tests.test_probe.conftest import GEOMETRY
from vitreg.probe.costs import StepCosts, estimate_probe_seconds, measure_step_costs, probe_fits
from vitreg.probe.run import run_probe

SMALL = {
    "linear": {"epochs": 6, "features": "cls+patch_mean"},
    "position": {"epochs": 5, "min_steps": 200, "patience": 100, "lr": "0.003,0.01"},
}


@pytest.mark.parametrize("kind", list(SMALL))
def test_estimate_within_3x_of_the_measured_time(planted, kind):
    g = GEOMETRY
    estimate = estimate_probe_seconds(
        kind, dim=g.dim, patches=g.patches, patch_size=g.img_size // g.grid[0],
        registers=g.registers, train_images=1600, val_images=400, num_classes=4,
        options=SMALL[kind])
    start = time.perf_counter()
    run_probe(kind, planted, **SMALL[kind])
    measured = time.perf_counter() - start
    assert measured / 3 <= estimate <= measured * 3, (kind, estimate, measured)


def test_estimates_scale_with_the_model():
    costs = StepCosts(step_s=0.001, flops_per_s=1e10)
    size = dict(patches=256, patch_size=14, train_images=10_000, val_images=1000)
    for kind in ("position", "reconstruct", "classify", "linear"):
        small = costs.seconds(probe_fits(kind, dim=384, registers=4, **size))
        giant = costs.seconds(probe_fits(kind, dim=1536, registers=4, **size))
        assert giant > 2 * small, kind  # 4x the width: more than twice the time
    few = costs.seconds(probe_fits("classify", dim=384, registers=0, num_classes=10, **size))
    many = costs.seconds(probe_fits("classify", dim=384, registers=0, num_classes=1000, **size))
    assert many > 10 * few
    # reconstruct predicts 14 x 14 x 3 = 588 values, position 258: more outputs, more time
    assert costs.seconds(probe_fits("reconstruct", dim=384, registers=0, **size)) > \
        costs.seconds(probe_fits("position", dim=384, registers=0, **size))


def test_fits_count_steps_by_hand():
    # 1,000 images -> 2% of 256 patches each: 5,120 tokens, 20 batches of 256 per pass;
    # min_steps 4,000 over 30 epochs -> ceil(4000 / 600) = 7 passes an epoch
    fit = probe_fits("position", dim=384, patches=256, patch_size=14, registers=0,
                     train_images=1000, val_images=100)[0]
    assert (fit.items, fit.passes, fit.steps, fit.copies) == (5120, 7, 20 * 7 * 30, 5)


def test_measured_step_costs_are_positive():
    costs = measure_step_costs()
    assert costs.step_s > 0 and costs.flops_per_s > 1e6
