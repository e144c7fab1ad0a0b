"""What extraction prints as it goes: a rate that is the run's, and a rerun of a
finished store that says it is complete."""

from __future__ import annotations

import re
import time

import pytest
import timm
from click.testing import CliRunner

import tests.tiny_models  # noqa: F401
from tests.tiny_models import FAMILIES, _factory
from vitreg.core.progress import average_rate, human_seconds
from vitreg.extract.run import run_extract

#: Seconds the slow model sleeps per forward pass (a batch).
SLEEP = 0.3


@timm.models.register_model
def tiny_dino_slow(pretrained: bool = False, **kwargs):
    """tiny_dino that takes SLEEP seconds per batch: the loop's time is known."""
    model = _factory(*FAMILIES["tiny_dino"])(**kwargs)
    model.patch_embed.register_forward_hook(lambda *_: time.sleep(SLEEP))
    return model


def test_printed_rate_is_the_runs_rate(tmp_path, shards, capsys):
    start = time.perf_counter()
    summary = run_extract(shards=shards, model="tiny_dino_slow", weights="random",
                          out=str(tmp_path / "s.zarr"), batch_size=4, workers=0, progress=True)
    wall = time.perf_counter() - start
    printed = capsys.readouterr().err
    rates = [float(r) for r in re.findall(r"([\d.]+) img/s", printed)]
    assert rates, printed
    # 13 images in 4 batches: the loop takes at least 4 * SLEEP s
    true_rate = summary.processed / wall
    assert summary.processed == 13 and wall >= 4 * SLEEP
    assert true_rate / 2 <= rates[-1] <= true_rate * 2, (rates, true_rate, printed)
    assert rates[-1] <= 13 / (4 * SLEEP) * 1.05  # never faster than the sleeps allow


def test_finished_rerun_says_already_complete(tmp_path, shards):
    from vitreg.cli import cli

    out = str(tmp_path / "s.zarr")
    args = ["extract", *shards, "--model", "tiny_dino", "--weights", "random", "--out", out,
            "--no-progress"]
    runner = CliRunner()
    first = runner.invoke(cli, args)
    assert first.exit_code == 0 and "13 processed" in first.output, first.output
    again = runner.invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert "already complete" in again.output and "0 processed" not in again.output


@pytest.mark.parametrize(("seconds", "text"), [(4.24, "4.2 s"), (42, "42 s"), (300, "5.0 min"),
                                               (7560, "2.1 h")])
def test_durations_read_in_their_unit(seconds, text):
    assert human_seconds(seconds) == text


def test_average_rate_is_done_over_elapsed():
    assert average_rate(0, 5.0) is None and average_rate(3, 0.0) is None
    assert average_rate(50, 10.0) == 5.0
