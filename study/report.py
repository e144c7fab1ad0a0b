"""The study's combined report: `analysis report` over every model's store and
probe result, plus the plan's analyses (maps at 800 px, cross-model figures)
as the paper's figures, appended to the same self-contained page."""

from __future__ import annotations

from pathlib import Path

from vitreg.analysis.grid import CSS as GRID_CSS
from vitreg.analysis.grid import MANIFEST, grid_html
from vitreg.analysis.presentation import Figures, caption_for
from vitreg.analysis.report import esc

#: Analysis recipe name -> the paper's figures it reproduces.
FIGURES: dict[str, str] = {
    "norms": "Figure 4 and Claims 1-2: norm distributions of every model",
    "similarity": "Figure 3: neighbour similarity of outlier and normal patches",
    "maps": ("Figures 1, 2, 5, 6, 7: models x images at high resolution (input, [CLS] "
             "attention, norms, q/k/v, per-block norms)"),
}

#: Width of the embedded per-block figures (two per model: 36 in the paper plan), in
#: pixels; each links to its full-size PNG.
PER_STORE_WIDTH = 360

#: Per-store figures of one image, by file-name prefix: the column they fill.
PER_STORE = {"blocks": "token-norm map after each block (study Fig. 7)",
             "blocks_qkv": "q, k, v and output norm maps of each block (study A.2)"}

CSS = """
table.perstore td{white-space:normal;text-align:left;vertical-align:top;max-width:420px}
table.perstore figcaption{font-size:11px}
"""

#: Per-image figures (one row per store) that the models x images grid replaces.
GRID_REPLACES = ("maps", "qkv")


def study_section(folder: Path, figures: Figures | None = None) -> str:
    """One analysis's figures: the maps as models x images grids (as the study lays
    them out), then the other figures of one kind together, each with a caption that
    says what it shows; a figure already on the page is named, not embedded again."""
    figures = figures or Figures()
    title = FIGURES.get(folder.name, folder.name)
    paths = sorted(folder.glob("*.png"), key=lambda f: (f.stem.split("_")[0], f.stem))
    parts = [f"<h3>{esc(title)}</h3>"]
    if (folder / MANIFEST).exists():
        parts.append(grid_html(folder))
        paths = [f for f in paths if f.stem.split("_")[0] not in GRID_REPLACES]
    per_store = [f for f in paths if f.stem.startswith("blocks_")]
    parts += [figures.figure(f, caption_for(f)) for f in paths if f not in per_store]
    if per_store:
        parts.append(per_store_table(per_store, figures))
    return "".join(parts)


def per_store_table(paths: list[Path], figures: Figures) -> str:
    """The per-block figures as a table: rows the models, columns the kinds of figure;
    small thumbnails, each linked to its full-size PNG."""
    rows: dict[str, dict[str, Path]] = {}
    for path in paths:
        kind = "blocks_qkv" if path.stem.startswith("blocks_qkv_") else "blocks"
        index = path.stem[len(kind) + 1:].partition("_")[0]
        rows.setdefault(index, {})[kind] = path
    kinds = [k for k in PER_STORE if any(k in r for r in rows.values())]
    head = "".join(f"<th>{esc(PER_STORE[k])}</th>" for k in kinds)
    body = "".join(
        "<tr>" + "".join(f"<td>{figures.figure(r[k], caption_for(r[k]), PER_STORE_WIDTH)}"
                         "</td>" if k in r else "<td>—</td>" for k in kinds) + "</tr>"
        for _, r in sorted(rows.items(), key=lambda item: int(item[0])))
    return ('<p class="note">Per-block maps of the first image, one row per model (click a '
            f'thumbnail for the full figure).</p><table class="perstore"><tr>{head}</tr>'
            f"{body}</table>")


def add_study_sections(html: Path, analyses: list[str]) -> None:
    """Append the analyses' figures to `html` (before `</body>`), atomically."""
    if not analyses:
        return
    from .steps import write_atomic

    text = html.read_text(encoding="utf-8")
    figures = Figures(base=html.parent, page=text)
    body = (f"<style>{GRID_CSS}{CSS}</style><h2>Study figures</h2>"
            + "".join(study_section(Path(a), figures) for a in analyses))
    cut = text.rfind("</body>")
    write_atomic(html, text[:cut] + body + text[cut:])
