"""Every probe number carries its sample size; classes missing from training are
said, and give no accuracy; a fit shows one bar, epoch lines only with -v."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner

from tests.test_probe.conftest import GEOMETRY
from vitreg.probe.coverage import class_coverage, with_sample_sizes
from vitreg.probe.run import run_probe
from vitreg.testing import write_planted_store


def test_class_coverage_counts_by_hand():
    train = np.array([0, 0, 1, 2, 2, 2])
    val = np.array([1, 3, 3, 4, 0])
    cov = class_coverage(train, val)
    # by hand: train classes {0,1,2}, val classes {0,1,3,4}, val images of seen classes 1 and 0
    assert cov == {"train_images": 6, "val_images": 5, "train_classes": 3, "val_classes": 4,
                   "val_images_of_seen_classes": 2}


def test_no_accuracy_when_no_val_class_was_trained_on():
    notes: list[str] = []
    cov = class_coverage(np.array([0, 1]), np.array([2, 3, 3]))
    out = with_sample_sizes({"cls": {"top1": 0.0, "top5": 0.5}}, cov, notes)
    assert out["cls"]["top1"] is None and out["cls"]["top5"] is None
    assert out["cls"]["count"] == 3 and out["cls"]["classes_seen"] == 2
    assert len(notes) == 1 and "no accuracy" in notes[0]


def test_linear_probe_on_disjoint_classes_reports_no_accuracy(tmp_path):
    train = write_planted_store(str(tmp_path / "train.zarr"), n_images=48, geometry=GEOMETRY,
                                seed=0, labels=np.arange(48) % 2)
    val = write_planted_store(str(tmp_path / "val.zarr"), n_images=24, geometry=GEOMETRY,
                              seed=1, codes_seed=0, labels=2 + np.arange(24) % 2)
    result = run_probe("linear", train, val=val, epochs=2, num_classes=4,
                       features="cls+patch_mean")
    metrics = result["metrics"]["cls+patch_mean"]
    assert metrics["top1"] is None and metrics["count"] == 24 and metrics["classes_seen"] == 2
    assert any("no accuracy" in note for note in result["notes"])
    assert result["class_coverage"]["val_images_of_seen_classes"] == 0


def test_probe_console_is_one_bar_and_epoch_lines_only_verbose(planted, tmp_path):
    from vitreg.cli import cli

    args = ["probe", "linear", planted, "--out", str(tmp_path / "r.json"), "--epochs", "3",
            "--features", "cls+patch_mean"]
    quiet = CliRunner().invoke(cli, args)
    assert quiet.exit_code == 0, quiet.output
    assert "epoch 3/3, 1 copy" in quiet.output and "loss" not in quiet.output
    assert "n (val)" in quiet.output and "train / " in quiet.output
    verbose = CliRunner().invoke(cli, [*args, "-v"])
    assert verbose.exit_code == 0, verbose.output
    assert verbose.output.count("loss") == 3  # one line per epoch, one copy
