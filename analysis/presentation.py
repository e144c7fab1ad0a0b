"""How the report presents numbers and figures: each statistic by a plain name
with a one-line definition and its unit, every number with its sample size n
beside it, figures as thumbnails that link to the full-size PNG (the page
stays small with dozens of figures), each figure once."""

from __future__ import annotations

import base64
import hashlib
import html
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Widest thumbnail embedded in the page, in pixels (the full PNG is linked).
THUMB_WIDTH = 1400
#: Largest area of an embedded thumbnail, in pixels (a tall figure of 18 models is
#: shrunk to it; the full PNG is linked).
THUMB_PIXELS = 2_000_000

CSS = """
td.def{color:#555;font-size:12px;text-align:left;max-width:420px;white-space:normal}
td{white-space:nowrap} td:first-child{white-space:normal;min-width:140px}
th{white-space:normal;max-width:260px;vertical-align:bottom} td.unit{text-align:left}
th.def{text-align:left}
span.n{color:#666;font-size:11px;margin-left:4px}
figure{margin:14px 0} figcaption{color:#444;font-size:13px;max-width:1000px}
img.thumb{max-width:100%;height:auto}
@media print{body{max-width:none;margin:8mm} figure,table{break-inside:avoid}
 img.thumb{max-width:100%} a{color:inherit;text-decoration:none}}
@page{size:A4;margin:10mm}
"""


@dataclass(frozen=True)
class Statistic:
    name: str
    definition: str
    unit: str
    #: the statistic's key holding its sample size, and what is counted
    n_key: str | None = None
    n_of: str = ""
    #: shown as a percentage (a fraction in the data)
    percent: bool = False
    #: a count: it is the n of other rows
    count: bool = False


_NORM = "L2 norm (before final LayerNorm)"
STATISTICS: dict[str, Statistic] = {
    "patch_tokens": Statistic("n: patch tokens", "patch tokens the norm statistics are "
                              "computed on (sampled images x patches)", "tokens", count=True),
    "median": Statistic("median norm", "median L2 norm of the patch tokens", _NORM,
                        "patch_tokens", "tokens"),
    "threshold": Statistic("outlier threshold", "98th percentile of the patch-token norms; a "
                           "patch token above it is an outlier", _NORM, "patch_tokens", "tokens"),
    "max": Statistic("largest norm", "largest patch-token norm", _NORM, "patch_tokens", "tokens"),
    "fraction_above_threshold": Statistic(
        "share above threshold", "patch tokens whose norm is above the threshold "
        "(2% by construction, more with ties)", "%", "patch_tokens", "tokens", percent=True),
    "max_over_median": Statistic("largest / median", "largest norm divided by the median norm",
                                 "ratio", "patch_tokens", "tokens"),
    "bimodality_coefficient": Statistic(
        "bimodality coefficient", "Sarle's b = (skewness² + 1) / kurtosis of the norms; above "
        "5/9 = 0.556 suggests two modes (normal and outlier tokens)", "0-1", "patch_tokens",
        "tokens"),
    "images": Statistic("n: images", "images sampled from the store (--images, seeded)",
                        "images", count=True),
    "cls_median": Statistic("[CLS] median norm", "median L2 norm of the [CLS] token", _NORM,
                            "images", "images"),
    "register_median": Statistic("register median norm", "median L2 norm of the register "
                                 "tokens (every register of every image)", _NORM, "images",
                                 "images"),
    "outliers": Statistic("n: outlier patches", "patch tokens above the store's threshold",
                          "tokens", count=True),
    "normals": Statistic("n: normal patches", "patch tokens at or below the threshold",
                         "tokens", count=True),
    "cut": Statistic("redundancy cut", "neighbour similarity above which a patch counts as "
                     "redundant with its neighbours", "cosine", "normals", "normal tokens"),
    "cut_percentile_of_normal": Statistic(
        "cut as percentile", "the cut, as a percentile of the normal patches' similarity",
        "percentile", "normals", "normal tokens"),
    "p_redundant_outlier": Statistic(
        "P(redundant | outlier)", "share of outlier patches whose neighbour similarity is "
        "above the cut", "%", "outliers", "outlier tokens", percent=True),
    "p_redundant_normal": Statistic(
        "P(redundant | normal)", "share of normal patches whose neighbour similarity is above "
        "the cut", "%", "normals", "normal tokens", percent=True),
    "ratio": Statistic("outlier / normal", "P(redundant | outlier) divided by P(redundant | "
                       "normal); above 1: outliers sit in more redundant patches", "ratio",
                       "outliers", "outlier tokens"),
    "median_cos_outlier": Statistic(
        "median similarity, outliers", "median over outlier patches of the mean cosine "
        "similarity of the patch embedding with its 4 neighbours", "cosine", "outliers",
        "outlier tokens"),
    "median_cos_normal": Statistic(
        "median similarity, normal", "the same median over normal patches", "cosine",
        "normals", "normal tokens"),
    "images_drawn": Statistic("images drawn", "keys of the images whose maps are shown",
                              "keys"),
    "first_block_images": Statistic("n: images (blocks)", "images the per-block norms are "
                                    "read from", "images", count=True),
    "first_high_norm_block": Statistic(
        "first high-norm block", "first block (1-based) where at least half of the final "
        "outliers are already above that block's 98th percentile", "block",
        "first_block_images", "images"),
}


def esc(value: Any) -> str:
    return html.escape("—" if value is None else str(value))


def number(value: Any, *, percent: bool = False) -> str:
    """4 significant digits; counts with thousands separators; fractions as %."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, (list, tuple)):  # keys: quoted, never read as numbers
            return esc(", ".join(f"“{v}”" for v in value))
        return esc(value)
    if isinstance(value, int):
        return f"{value:,}"
    if percent:
        return f"{100 * value:.2f}"
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"


def n_span(n: Any, of: str = "") -> str:
    """`n = 1,234 tokens`, small and grey beside a number."""
    if n is None:
        return ""
    count = f"{n:,}" if isinstance(n, int) else esc(n)
    return f'<span class="n">(n = {count}{" " + esc(of) if of else ""})</span>'


def stat_row(key: str, per_store: list[dict[str, Any]]) -> list[str]:
    """Cells of one statistic: name, definition, unit, then each store's value with its n."""
    spec = STATISTICS.get(key, Statistic(key.replace("_", " "), "", ""))
    cells = [esc(spec.name), esc(spec.definition), esc(spec.unit)]
    for stats in per_store:
        value = stats.get(key)
        cell = number(value, percent=spec.percent)
        if spec.n_key and value is not None and not isinstance(value, (list, str)):
            cell += n_span(stats.get(spec.n_key), spec.n_of)
        cells.append(cell)
    return cells


def stats_table(stats: dict[str, dict[str, Any]]) -> str:
    """Rows: statistics by plain name, with definition and unit; columns: stores."""
    labels = list(stats)
    per_store = [stats[lb] for lb in labels]
    keys = list(dict.fromkeys(k for s in per_store for k in s))
    head = ("<th>statistic</th><th class=\"def\">definition</th><th class=\"def\">unit</th>"
            + "".join(f"<th>{esc(h)}</th>" for h in labels))
    rows = []
    for key in keys:
        cells = stat_row(key, per_store)
        rows.append(f"<tr><td>{cells[0]}</td><td class=\"def\">{cells[1]}</td>"
                    f"<td class=\"unit\">{cells[2]}</td>"
                    + "".join(f"<td>{c}</td>" for c in cells[3:]) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


# -- probe tables --------------------------------------------------------------------
#: metric key -> (column name, unit)
METRIC_HEADERS = {"top1": ("top-1", "%"), "top5": ("top-5", "%"),
                  "distance": ("distance", "patches"), "l2": ("L2 error", "0-255 pixel values"),
                  "mse": ("MSE", "pixel values², 0-255 scale")}


def metric_header(group: str, key: str) -> str:
    name, unit = METRIC_HEADERS.get(key, (key, ""))
    return f"{group} {name} ({unit})" if unit else f"{group} {name}"


def metric_cell(result: dict, group: str, key: str, scale: float) -> str:
    """A probe's number (two decimals, as the study prints them) and its n: the
    validation tokens or images it was measured on."""
    metrics = result["metrics"].get(group) or {}
    value = metrics.get(key)
    if value is None:
        return "—"
    n = metrics.get("count")
    of = "val images" if result.get("probe") in ("classify", "linear") else "val tokens"
    return f"{float(value) * scale:.2f}" + n_span(n, of)


# -- figures -------------------------------------------------------------------------
class Figures:
    """Embeds each figure once per page: a repeat (same bytes) links to the first."""

    def __init__(self, base: Path | None = None, page: str = "",
                 embedded: Callable[[int], None] = lambda n: None) -> None:
        self.base = base
        self.embedded = embedded  # called once per figure (a progress bar's advance)
        #: figures already on `page` (a report that sections are appended to)
        self.seen: dict[str, str] = {d: "an earlier figure" for d in
                                     re.findall(r'id="fig-([0-9a-f]{16})"', page)}

    def figure(self, path: str | Path, caption: str, width: int = THUMB_WIDTH) -> str:
        """`path` embedded as a thumbnail at most `width` px wide, linked to the PNG."""
        try:
            return self._figure(Path(path), caption, width)
        finally:
            self.embedded(1)

    def _figure(self, path: Path, caption: str, width: int) -> str:
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()[:16]
        if digest in self.seen:
            return (f'<p class="note">{esc(caption)}: the same figure as '
                    f'<a href="#fig-{digest}">{esc(self.seen[digest])}</a> above.</p>')
        self.seen[digest] = caption
        thumb, mime = thumbnail(data, width)
        link = self.link(path)
        img = (f'<img class="thumb" alt="{esc(caption)}" '
               f'src="data:{mime};base64,{base64.b64encode(thumb).decode()}">')
        if link:
            img = f'<a href="{esc(link)}">{img}</a>'
        return f'<figure id="fig-{digest}">{img}<figcaption>{esc(caption)}</figcaption></figure>'

    def link(self, path: Path) -> str | None:
        """The full-size PNG, relative to the page when it lies under it."""
        if self.base is None:
            return None
        try:
            return path.resolve().relative_to(self.base.resolve()).as_posix()
        except ValueError:
            return path.resolve().as_uri()


def thumbnail(data: bytes, width: int = THUMB_WIDTH,
              pixels: int = THUMB_PIXELS) -> tuple[bytes, str]:
    """`data` (a PNG) at most `width` px wide and `pixels` in area; a large
    photo-like one as JPEG."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        scale = min(1.0, width / img.width, (pixels / (img.width * img.height)) ** 0.5)
        if scale == 1.0 and len(data) < 400_000:
            return data, "image/png"
        img = img.convert("RGB")
        if scale < 1.0:
            img = img.resize((round(img.width * scale), round(img.height * scale)),
                             Image.LANCZOS)
        png, jpeg = io.BytesIO(), io.BytesIO()
        img.save(png, format="PNG", optimize=True)
        img.save(jpeg, format="JPEG", quality=85)
    if png.tell() <= 1.5 * jpeg.tell():
        return png.getvalue(), "image/png"
    return jpeg.getvalue(), "image/jpeg"


FIGURE_CAPTIONS = {
    "norms": "Distribution of patch-token L2 norms per store (density, log scale), with each "
             "store's 98th-percentile threshold; right: [CLS] and register norms.",
    "similarity": "Density of each patch's mean cosine similarity with its 4 neighbours "
                  "(patch embeddings), outlier vs normal patches, one panel per store.",
    "outlier_positions": "Where outlier patches sit: share of images with an outlier at "
                         "each grid position, per store.",
    "first_block": "Per block: share of the final outliers already above that block's 98th "
                   "percentile, and median norms of outlier and normal patches.",
}


#: Per-image figures by file-name prefix (`<kind>_<image key>`, per-store ones
#: `<kind>_<store index>_<image key>`): what they show.
IMAGE_FIGURES = {
    "maps": "input, [CLS] attention and patch-norm maps, one row per store",
    "qkv": "norms of q, k and v of the last block beside the output norms, one row per store",
    "blocks_qkv": "q, k, v and output norm maps of every block (study A.2)",
    "blocks": "patch-token norm map after every block (study Fig. 7)",
}


def caption_for(path: str | Path) -> str:
    """What a figure shows, from its file name; a per-store figure names its store
    (the `label` of the JSON beside it)."""
    path = Path(path)
    stem = path.stem
    if stem in FIGURE_CAPTIONS:
        return FIGURE_CAPTIONS[stem]
    kind = next((k for k in IMAGE_FIGURES if stem.startswith(k + "_")), None)
    if kind is None:
        return stem.replace("_", " ")
    key = stem[len(kind) + 1:]
    index, _, rest = key.partition("_")
    if kind.startswith("blocks") and index.isdigit() and rest:
        return f"{_store_label(path)}, image {rest}: {IMAGE_FIGURES[kind]}."
    return f"Image {key}: {IMAGE_FIGURES[kind]}."


def _store_label(png: Path) -> str:
    import json

    try:
        return str(json.loads(png.with_suffix(".json").read_text(encoding="utf-8"))["label"])
    except (OSError, ValueError, KeyError, TypeError):
        return "one store"
