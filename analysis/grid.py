"""The study's map figures as a models x images grid (Figures 1, 2, 5, 6): one small
image per store, image and map (the input, [CLS] attention, token norm, q/k/v norms),
named in a manifest `grid.json`, and laid out as HTML tables whose rows are the models
and whose columns are the images, each input image shown once.

A map cell is stored at the patch grid's own size as an 8-bit viridis-palette PNG and
enlarged by the browser (`image-rendering: pixelated`): 18 models x 3 images x 5 maps
stay near a megabyte in the page."""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vitreg.cache import Store

from .common import slug, write_json
from .study import study_name

MANIFEST = "grid.json"
#: Longest side of an input image cell, in pixels (JPEG).
INPUT_PX = 224
#: Width of every cell on the page, in CSS pixels.
CELL_PX = 150


@dataclass(frozen=True)
class GridMap:
    """One map kind: its key in the manifest, its figure title, and what a cell shows."""

    key: str
    title: str
    shows: str
    short: str  # the map in a cell's visible caption
    unit: str = "L2 norm"


#: The map kinds, in the order the figures appear (the output norm map is Figure 1's).
GRID_MAPS = (
    GridMap("norm", "Feature maps (study Figures 1, 2, 6)",
            "token L2 norm before the final LayerNorm, last block", "feature norm"),
    GridMap("attention", "Attention maps (study Figures 2, 5)",
            "[CLS] attention of the last block, mean of heads", "[CLS] attention",
            "attention weight"),
    GridMap("q", "Query norm maps (study Figure 6)", "norm of the queries, last block",
            "query norm"),
    GridMap("k", "Key norm maps (study Figure 6)", "norm of the keys, last block", "key norm"),
    GridMap("v", "Value norm maps (study Figure 6)", "norm of the values, last block",
            "value norm"),
)

CSS = f"""
table.grid td,table.grid th{{padding:2px;vertical-align:top;text-align:center;
 white-space:normal;max-width:{CELL_PX + 8}px}}
table.grid th[scope=row]{{text-align:left;font-size:12px;max-width:170px}}
table.grid img{{width:{CELL_PX}px;height:auto;image-rendering:pixelated;border:0;margin:0}}
figure.cell{{margin:0}} figure.cell figcaption{{font-size:10px;color:#555}}
figure.grid>figcaption{{font-size:13px;max-width:1000px}}
@media print{{table.grid img{{width:{CELL_PX * 2 // 3}px}}}}
"""


def image_name(key: str, label: int | None = None) -> str:
    """A readable name for an image: `n01440764_tench` -> `tench (n01440764)`."""
    hit = re.match(r"^(n\d{8})_(.+)$", key)
    if hit:
        return f"{hit.group(2).replace('_', ' ')} ({hit.group(1)})"
    return key if label is None or label < 0 else f"{key} (class {label})"


def model_name(store: Store) -> str:
    """The study's name of the store's model (DINOv2-S), else its timm name."""
    meta = store.meta
    return study_name(meta.get("model"), meta.get("pretrained_cfg")) or str(meta.get("model"))


def palette_png(grid: np.ndarray, path: Path) -> dict[str, float]:
    """`grid` as an 8-bit PNG with the viridis palette, its own colour scale."""
    from matplotlib import colormaps
    from PIL import Image

    values = np.asarray(grid, dtype=np.float32)
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    scaled = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    img = Image.fromarray(np.nan_to_num(scaled * 255).round().astype(np.uint8), mode="P")
    img.putpalette((colormaps["viridis"](np.arange(256))[:, :3] * 255).astype(np.uint8)
                   .ravel().tolist())
    img.save(path, optimize=True)
    return {"min": lo, "max": hi}


def input_jpeg(pixels: np.ndarray, path: Path) -> None:
    from PIL import Image

    img = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    img.thumbnail((INPUT_PX, INPUT_PX))
    img.save(path, format="JPEG", quality=85)


class GridWriter:
    """Collects the cells of the maps analysis; `close()` writes `grid.json`."""

    def __init__(self, out: Path, stores: Sequence[Store], labels: Sequence[str]) -> None:
        self.out = out
        (out / "cells").mkdir(parents=True, exist_ok=True)
        self.manifest: dict[str, Any] = {
            "stores": [{"model": model_name(s), "label": lb} for s, lb in zip(stores, labels)],
            "images": [], "input": {}, "cells": {m.key: {} for m in GRID_MAPS}}

    def add(self, store_index: int, key: str, label: int | None, maps: dict | None) -> None:
        """The cells of one store's maps of image `key` (None: the store lacks it)."""
        if key not in (img["key"] for img in self.manifest["images"]):
            self.manifest["images"].append({"key": key, "name": image_name(key, label)})
        if maps is None:
            return
        stem = f"{store_index}_{slug(key)}"
        if "pixels" in maps and key not in self.manifest["input"]:  # each image once
            input_jpeg(maps["pixels"], self.out / "cells" / f"input_{slug(key)}.jpg")
            self.manifest["input"][key] = f"cells/input_{slug(key)}.jpg"
        grids = {"norm": maps["norm"], "attention": maps.get("attention")}
        if "qkv" in maps:
            grids.update(zip("qkv", maps["qkv"]))
        for kind, grid in grids.items():
            if grid is not None:
                name = f"cells/{kind}_{stem}.png"
                scale = palette_png(grid, self.out / name)
                self.manifest["cells"][kind][f"{store_index}/{key}"] = {"file": name, **scale}

    def close(self) -> Path:
        return write_json(self.out / MANIFEST, self.manifest)


# -- the page ------------------------------------------------------------------------
def _esc(value: Any) -> str:
    import html

    return html.escape(str(value))


def _data_uri(path: Path) -> str:
    mime = "image/jpeg" if path.suffix == ".jpg" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def _cell(folder: Path, caption: str, file: str, shown: str | None = None) -> str:
    """An embedded image; `caption` in full as its alt text and tooltip, `shown` (or
    `caption`) under it."""
    return (f'<figure class="cell"><img alt="{_esc(caption)}" title="{_esc(caption)}" '
            f'src="{_data_uri(folder / file)}"><figcaption>{_esc(shown or caption)}'
            "</figcaption></figure>")


def _header(folder: Path, manifest: dict, with_inputs: bool) -> str:
    """Column heads: each image's name, and its input image on the first figure only."""
    cells = []
    for img in manifest["images"]:
        file = manifest["input"].get(img["key"]) if with_inputs else None
        shown = (_cell(folder, f"input image: {img['name']}", file) if file
                 else _esc(img["name"]))
        cells.append(f'<th scope="col" data-image="{_esc(img["key"])}">{shown}</th>')
    return '<tr><th scope="col">model \\ image</th>' + "".join(cells) + "</tr>"


def _map_cell(folder: Path, model: str, image: str, kind: GridMap, cell: dict | None) -> str:
    """One model's map of one image, captioned with both and the map's largest value."""
    if cell is None:
        return _esc(f"{model}: no {kind.short} map of {image}")
    peak = f"(max {cell['max']:.3g})"
    return _cell(folder, f"{model} · {image} · {kind.shows} {peak}", cell["file"],
                 f"{model} · {image.split(' (')[0]} · {kind.short} {peak}")


def grid_figure(folder: Path, manifest: dict, kind: GridMap, with_inputs: bool) -> str:
    """One figure: rows the models, columns the images, each cell captioned."""
    rows = []
    for i, store in enumerate(manifest["stores"]):
        cells = []
        for img in manifest["images"]:
            cell = manifest["cells"][kind.key].get(f"{i}/{img['key']}")
            cells.append(f'<td data-image="{_esc(img["key"])}">'
                         f'{_map_cell(folder, store["model"], img["name"], kind, cell)}</td>')
        rows.append(f'<tr data-model="{_esc(store["model"])}"><th scope="row">'
                    f'{_esc(store["model"])}<br><span class="n">{_esc(store["label"])}</span>'
                    f'</th>{"".join(cells)}</tr>')
    caption = (f"{kind.title}: {kind.shows} ({kind.unit}). Rows: the models; columns: the "
               "images. Each cell has its own colour scale (viridis: dark low, yellow high); "
               "its caption gives its largest value.")
    return (f'<figure class="grid" data-map="{kind.key}"><table class="grid">'
            f'{_header(folder, manifest, with_inputs)}{"".join(rows)}</table>'
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


def grid_html(folder: Path) -> str:
    """Every map kind the maps analysis in `folder` drew, as models x images figures."""
    import json

    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    kinds = [k for k in GRID_MAPS if manifest["cells"].get(k.key)]
    return "".join(grid_figure(folder, manifest, kind, i == 0) for i, kind in enumerate(kinds))
