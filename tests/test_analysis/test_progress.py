"""What `vitreg analysis` prints as it goes (issue #28): a bar per analysis whose
rate is the run's (steps over the whole time), ending at its total; none with
--no-progress."""

from __future__ import annotations

import re
import time

from click.testing import CliRunner

import vitreg.analysis.norms as norms_module
from vitreg.analysis import run_norms
from vitreg.analysis.progress import analysis_progress
from vitreg.cli import cli

#: Seconds each store's read takes in the slow analysis.
SLEEP = 0.4


def _slow_reads(monkeypatch) -> None:
    original = norms_module.store_norms

    def slow(store, **kwargs):
        time.sleep(SLEEP)
        return original(store, **kwargs)

    monkeypatch.setattr(norms_module, "store_norms", slow)


def test_printed_rate_is_the_analysis_rate(planted, tmp_path, monkeypatch, capsys):
    _slow_reads(monkeypatch)
    start = time.perf_counter()
    with analysis_progress():
        run_norms([planted.url] * 3, out=tmp_path / "n", images=0)
    wall = time.perf_counter() - start
    printed = capsys.readouterr().err
    assert re.search(r"analysis norms .*4/4", printed), printed  # 3 reads and the figure
    rates = [float(r) for r in re.findall(r"([\d.]+) step/s", printed)]
    assert rates, printed
    true_rate = 4 / wall
    assert wall >= 3 * SLEEP
    assert true_rate / 2 <= rates[-1] <= true_rate * 2, (rates, true_rate, printed)
    assert rates[-1] <= 4 / (3 * SLEEP) * 1.05  # never faster than the sleeps allow


def test_each_command_shows_its_bar_unless_told_not_to(planted, tmp_path):
    runner = CliRunner()
    shown = runner.invoke(cli, ["analysis", "maps", planted.url, "--out", str(tmp_path / "a"),
                                "--top", "2", "--images", "0"])
    assert shown.exit_code == 0, shown.output
    # 2 images, outlier positions of 1 store and its figure, first block of 1 store and
    # its figure
    assert re.search(r"analysis maps .*6/6 .*step/s", shown.stderr), shown.stderr
    quiet = runner.invoke(cli, ["analysis", "maps", planted.url, "--out", str(tmp_path / "b"),
                                "--top", "2", "--images", "0", "--no-progress"])
    assert quiet.exit_code == 0 and "step/s" not in quiet.stderr, quiet.stderr
    assert "wrote" in quiet.stdout


def test_the_report_bar_counts_every_figure(planted, tmp_path):
    result = CliRunner().invoke(cli, ["analysis", "report", planted.url, "--out",
                                      str(tmp_path / "r"), "--top", "1", "--images", "0"])
    assert result.exit_code == 0, result.output
    figures = len(list((tmp_path / "r").glob("*/*.png")))  # not the grid cells
    for name in ("norms", "similarity", "maps"):
        assert f"analysis {name} " in result.stderr
    assert re.search(rf"analysis report .*{figures}/{figures} ", result.stderr), result.stderr
