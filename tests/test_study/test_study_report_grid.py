"""The study report's map figures as the study lays them out (issue #28): a grid per
map kind whose rows are the models and whose columns are the images, each input
image once on the page, each cell captioned with the model, the image and the map."""

from __future__ import annotations

import base64
import html
import io
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from vitreg.analysis import run_maps
from vitreg.cache import Geometry
from vitreg.study.report import add_study_sections
from vitreg.testing import write_store

KEYS = ["n01440764_tench", "n01443537_goldfish", "n01484850_great_white_shark",
        "n01491361_tiger_shark"]
MODELS = {"vit_small_patch14_dinov2.lvd142m": "DINOv2-S",
          "vit_giant_patch14_dinov2.lvd142m": "DINOv2-G", "my_own_vit": "my_own_vit"}
GRID = (4, 5)
#: (image, patch) of each planted peak norm: images 2 and 0 have the largest
PEAKS = {0: 7, 1: 3, 2: 12, 3: 19}
PEAK = {0: 40.0, 1: 20.0, 2: 50.0, 3: 10.0}


def _store(path, model: str, seed: int) -> str:
    rng = np.random.default_rng(seed)
    g = Geometry(registers=0, grid=GRID, dim=8, depth=2, img_size=40)
    norms = rng.uniform(1.0, 2.0, size=(len(KEYS), g.tokens)).astype(np.float32)
    for row, patch in PEAKS.items():
        norms[row, 1 + patch] = PEAK[row]
    arrays = {
        "norms": norms,
        "attention": rng.uniform(0, 1, size=norms.shape).astype(np.float16),
        "pixels": rng.integers(0, 255, size=(len(KEYS), 40, 40, 3), dtype=np.uint8),
        "qkv_norms": np.stack([norms, norms * 2, norms * 3], axis=1).astype(np.float16),
        "blocks/norms": np.stack([norms / 2, norms], axis=1).astype(np.float16),
        "blocks/qkv_norms": rng.uniform(1, 2, size=(len(KEYS), 2, 3, g.tokens)).astype(
            np.float16),
        "key": np.array(KEYS, dtype=object),
        "label": np.arange(len(KEYS), dtype=np.int32),
    }
    return write_store(str(path), arrays, geometry=g, chunk_rows=2, model=model)


class Grids(HTMLParser):
    """Each `figure.grid`: its map, column keys, and rows of (model, [cell keys])."""

    def __init__(self) -> None:
        super().__init__()
        self.grids: list[dict] = []
        self.imgs: list[dict] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "figure" and "grid" in a.get("class", "").split():
            self.grids.append({"map": a["data-map"], "columns": [], "rows": []})
        elif tag == "th" and a.get("scope") == "col" and "data-image" in a:
            self.grids[-1]["columns"].append(a["data-image"])
        elif tag == "tr" and "data-model" in a:
            self.grids[-1]["rows"].append((a["data-model"], []))
        elif tag == "td" and "data-image" in a:
            self.grids[-1]["rows"][-1][1].append(a["data-image"])
        elif tag == "img":
            self.imgs.append(a)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[str, Grids]:
    tmp_path = tmp_path_factory.mktemp("grid")
    stores = [_store(tmp_path / f"s{i}.zarr", m, i) for i, m in enumerate(MODELS)]
    run_maps(stores, out=tmp_path / "maps", top=2, images=0)
    page = tmp_path / "report.html"
    page.write_text("<!DOCTYPE html><html><body><h1>r</h1></body></html>")
    add_study_sections(page, [str(tmp_path / "maps")])
    text = page.read_text()
    parser = Grids()
    parser.feed(text)
    return text, parser


def _pixels(img: dict) -> np.ndarray:
    data = base64.b64decode(img["src"].split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)))


def test_rows_are_the_models_and_columns_the_images_each_image_once(report):
    text, page = report
    top2 = [KEYS[2], KEYS[0]]  # the first store's two images with the largest norm
    assert [g["map"] for g in page.grids] == ["norm", "attention", "q", "k", "v"]
    for grid in page.grids:
        assert grid["columns"] == top2
        assert [model for model, _ in grid["rows"]] == list(MODELS.values())
        assert all(cells == top2 for _, cells in grid["rows"])
    inputs = [i for i in page.imgs if i["alt"].startswith("input image")]
    assert sorted(i["alt"] for i in inputs) == ["input image: great white shark (n01484850)",
                                                "input image: tench (n01440764)"]
    # the per-image composites (one row per store) are not embedded besides the grid
    assert "one row per store" not in text


def test_each_cell_is_captioned_and_shows_its_own_map(report):
    _, page = report
    norm = [i for i in page.imgs if "token L2 norm before the final LayerNorm" in i["alt"]]
    assert len(norm) == len(MODELS) * 2
    for img in norm:
        model, name, _ = img["alt"].split(" · ")
        assert model in MODELS.values() and name in ("tench (n01440764)",
                                                     "great white shark (n01484850)")
        row = 0 if name.startswith("tench") else 2
        assert f"(max {PEAK[row]:.3g})" in img["alt"]
        cell = _pixels(img)
        assert cell.shape == GRID  # one pixel per patch, at the grid's own size
        assert np.unravel_index(cell.argmax(), GRID) == np.unravel_index(PEAKS[row], GRID)
    keys = [i for i in page.imgs if "norm of the keys" in i["alt"]]
    assert len(keys) == len(MODELS) * 2
    assert all("max" in i["alt"] and i["title"] == i["alt"] for i in keys)


def test_per_block_figures_are_one_row_per_model(report):
    text, _ = report
    start = text.index("Per-block maps of the first image")
    table = text[start:text.index("</table>", start)]
    rows = re.findall(r"<tr>(.*?)</tr>", table)[1:]
    assert len(rows) == len(MODELS)
    for row, model in zip(rows, MODELS):
        captions = re.findall(r"<figcaption>(.*?)</figcaption>", row)
        assert len(captions) == 2 and all(c.startswith(html.escape(model)) for c in captions)
        assert "after every block" in captions[0] and "q, k, v and output" in captions[1]
