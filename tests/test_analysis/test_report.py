"""The HTML report: self-contained, warns about random weights, lays out probes
as the study's tables, and renders in a real browser."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from tests.test_analysis.render import find_chromium, render_png
from vitreg.analysis import run_report
from vitreg.analysis.cli import analysis

from .conftest import make_store


def _probe(path, kind, metrics, model="vit_small_patch14_dinov2.lvd142m", weights="pretrained"):
    data = {"probe": kind, "store": {"model": model, "weights": weights, "weights_sha256": "ab",
                                     "schema_version": "1.0", "url": "s.zarr"},
            "val_store": None, "config": {"seed": 42}, "counts": {}, "metrics": metrics,
            "curves": [], "elapsed_s": 1.0, "backend": "sklearn"}
    path.write_text(json.dumps(data))
    return str(path)


@pytest.fixture
def probes(tmp_path):
    return [
        _probe(tmp_path / "pos.json", "position",
               {"normal": {"top1": 0.5, "distance": 0.9}, "outlier": {"top1": 0.1, "distance": 3}}),
        _probe(tmp_path / "cls.json", "classify",
               {"cls": {"top1": 0.7}, "normal": {"top1": 0.5}, "outlier": {"top1": 0.6}}),
        _probe(tmp_path / "rec.json", "reconstruct",
               {"normal": {"mse": 0.1, "l2": 300.0}, "outlier": {"mse": 0.3, "l2": 700.0}}),
        _probe(tmp_path / "lin.json", "linear",
               {"cls+patch_mean": {"top1": 0.8}, "head": {"top1": 0.81}},
               model="vit_small_patch14_reg4_dinov2.lvd142m"),
    ]


def test_report_is_self_contained_with_tables(planted, probes, tmp_path):
    path = run_report([planted.url], out=tmp_path / "rep", probes=probes, images=0, top=1)
    text = path.read_text()
    srcs = re.findall(r'src="([^"]*)"', text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<link" not in text and "<script" not in text
    assert "RANDOM WEIGHTS" not in text
    for number in range(1, 6):
        assert f"Table {number}." in text
    # the study's numbers beside ours where the model matches
    assert "study: DINOv2-S" in text and "28.05" in text and "74.81" in text
    assert "383.1" in text and "82.28" in text and "81.65" in text
    assert "Sarle" in json.loads((tmp_path / "rep" / "norms" / "norms.json").read_text())[
        "bimodality"]


def test_random_weights_banner(tmp_path):
    store = make_store(tmp_path / "r.zarr", n=8, extras=False, weights="random")
    text = run_report([store.url], out=tmp_path / "rep", images=0, top=1).read_text()
    banner = text.index('class="random"')
    assert banner < text.index("<h1>")
    assert "RANDOM WEIGHTS" in text


def test_cli_commands(planted, probes, tmp_path):
    runner = CliRunner()
    for cmd in (["norms"], ["similarity", "--redundant-percentile", "80"], ["maps", "--top", "1"]):
        res = runner.invoke(analysis, [*cmd, planted.url, "--out", str(tmp_path / cmd[0])])
        assert res.exit_code == 0, res.output
    res = runner.invoke(analysis, ["report", planted.url, "--out", str(tmp_path / "rep"),
                                   "--top", "1", "--images", "0", "--probes", probes[0]])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "rep" / "report.html").exists()
    res = runner.invoke(analysis, ["norms", str(tmp_path / "missing.zarr"), "--out", "x"])
    assert res.exit_code != 0 and "no such file or folder" in res.output


@pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed")
def test_report_renders_in_chromium(planted, probes, tmp_path):
    from PIL import Image

    path = run_report([planted.url], out=tmp_path / "rep", probes=probes, images=0, top=1)
    png = render_png(path, tmp_path / "report.png", height=3000)
    with Image.open(png) as im:
        assert im.size == (1400, 3000)
        colours = im.convert("RGB").resize((50, 100)).getcolors(5000)
    assert colours is not None and len(colours) > 20  # not a blank page
