"""The report reads like a paper's appendix: every number in its tables has its
sample size beside it, statistics have plain names and definitions, figures
are embedded once, histograms are densities."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from vitreg.analysis import run_report
from vitreg.analysis.norms import density
from vitreg.analysis.presentation import STATISTICS, Figures

NUMBER = re.compile(r"^-?[\d,]*\.?\d+(e-?\d+)?%?$")


class Tables(HTMLParser):
    """Every table as rows of (css class, [cell text]), header row first."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[tuple[str, list[str]]]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append((dict(attrs).get("class") or "", []))
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.tables[-1][-1][1].append(" ".join("".join(self.cell).split()))
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def probe_json(path, kind, metrics, model="vit_small_patch14_dinov2.lvd142m"):
    path.write_text(json.dumps({
        "probe": kind, "store": {"model": model, "weights": "pretrained", "url": "s.zarr"},
        "val_store": None, "config": {"seed": 42}, "counts": {}, "metrics": metrics,
        "curves": [], "elapsed_s": 1.0, "backend": "torch"}))
    return str(path)


@pytest.fixture
def report(planted, tmp_path):
    probes = [
        probe_json(tmp_path / "pos.json", "position",
                   {"normal": {"top1": 0.5, "distance": 0.9, "count": 40},
                    "outlier": {"top1": 0.1, "distance": 3.0, "count": 40}}),
        probe_json(tmp_path / "cls.json", "classify",
                   {h: {"top1": 0.5, "count": 3} for h in ("cls", "normal", "outlier")}),
        probe_json(tmp_path / "rec.json", "reconstruct",
                   {"normal": {"mse": 10.0, "l2": 300.0, "count": 40},
                    "outlier": {"mse": 30.0, "l2": 700.0, "count": 40}}),
        probe_json(tmp_path / "lin.json", "linear",
                   {"cls+patch_mean": {"top1": 0.8, "count": 13},
                    "head": {"top1": 0.81, "count": 13}},
                   model="vit_small_patch14_reg4_dinov2.lvd142m"),
    ]
    path = run_report([planted.url], out=tmp_path / "rep", probes=probes, images=0, top=1)
    return path.read_text(encoding="utf-8")


def test_report_tables_read_like_an_appendix(report):
    """One report (analyses are the slow part), three checks."""
    parser = Tables()
    parser.feed(report)
    every_number_has_its_n(parser)
    statistics_have_plain_names(parser, report)
    # probe columns say their unit
    assert "normal distance (patches)" in report
    assert "normal L2 error (0-255 pixel values)" in report and "cls top-1 (%)" in report


def every_number_has_its_n(parser: Tables) -> None:
    checked = 0
    for rows in parser.tables:
        header = rows[0][1]
        if header[0] == "field":  # provenance: settings of the store, not measurements
            continue
        for css, cells in rows[1:]:
            if css == "study" or cells[0].startswith("n:"):
                continue  # the study's quoted numbers; a row that is itself a count
            for cell in cells[1:]:
                value = cell.split("(n = ")[0].strip()
                if NUMBER.match(value):
                    checked += 1
                    assert "(n = " in cell, (header, cells[0], cell)
    assert checked >= 20  # the stats tables and Tables 1-5 were seen


def statistics_have_plain_names(parser: Tables, report: str) -> None:
    stats_tables = [rows for rows in parser.tables if rows[0][1][:3] == ["statistic",
                                                                         "definition", "unit"]]
    assert stats_tables
    for rows in stats_tables:
        for _, cells in rows[1:]:
            assert "_" not in cells[0] and cells[1], cells  # a plain name and a definition
    assert "bimodality_coefficient" not in report and "p_redundant_outlier" not in report
    for spec in STATISTICS.values():
        assert spec.count or spec.n_key is None or spec.n_key in STATISTICS


def test_each_figure_is_embedded_once(tmp_path):
    from PIL import Image

    png = tmp_path / "a.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(png)
    copy = tmp_path / "b.png"
    copy.write_bytes(png.read_bytes())
    figures = Figures(base=tmp_path)
    page = figures.figure(png, "first") + figures.figure(copy, "again")
    assert page.count("<img") == 1 and "same figure as" in page
    again = Figures(base=tmp_path, page=page).figure(copy, "appended later")
    assert "<img" not in again


def test_wide_figures_become_thumbnails(tmp_path):
    from PIL import Image

    from vitreg.analysis.presentation import THUMB_WIDTH, thumbnail

    rng = np.random.default_rng(42)
    big = tmp_path / "big.png"
    Image.fromarray(rng.integers(0, 255, (600, 3000, 3), dtype=np.uint8)).save(big)
    data, mime = thumbnail(big.read_bytes())
    import io

    with Image.open(io.BytesIO(data)) as im:
        assert im.width == THUMB_WIDTH and mime in ("image/png", "image/jpeg")
    assert len(data) < big.stat().st_size


def test_histogram_density_integrates_to_one():
    rng = np.random.default_rng(42)
    values = rng.gamma(2.0, 3.0, 5000)
    edges = np.linspace(0, values.max(), 41)
    counts = np.histogram(values, bins=edges)[0]
    expected = np.histogram(values, bins=edges, density=True)[0]
    np.testing.assert_allclose(density(counts, edges), expected)
    assert np.isclose((density(counts, edges) * np.diff(edges)).sum(), 1.0)
