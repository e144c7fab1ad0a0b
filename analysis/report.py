"""One self-contained HTML report of a study: provenance of each store, every
figure of the analyses (embedded), their statistics, and the probe results laid
out as the study's Tables 1-5 beside the study's numbers."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vitreg.cache import Store

from .common import ANALYSES, open_stores, provenance, registered, store_labels
from .presentation import CSS as PRESENTATION_CSS
from .presentation import Figures, caption_for, metric_cell, metric_header, stats_table
from .study import STUDY_SETUP, TABLE4, TABLE5, TABLES, study_name

CSS = """
body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1300px;color:#222}
h1{margin-bottom:4px} h2{border-bottom:2px solid #ccc;padding-bottom:4px;margin-top:36px}
table{border-collapse:collapse;margin:10px 0 18px;font-size:14px}
td,th{border:1px solid #bbb;padding:4px 9px;text-align:right;max-width:520px;overflow-wrap:anywhere}
th{background:#eee} td:first-child,th:first-child{text-align:left}
tr.study td{color:#555;background:#f6f6f6;font-style:italic}
img{max-width:100%;border:1px solid #ddd;margin:8px 0}
.random{background:#c00;color:#fff;font-size:22px;font-weight:bold;padding:18px;
 border:6px solid #600;margin-bottom:20px}
.note{color:#555;font-size:13px} code{background:#f2f2f2;padding:1px 4px}
"""


def esc(value: Any) -> str:
    return html.escape("—" if value is None else str(value))


def fmt(value: Any, scale: float = 1.0) -> str:
    """Statistics with 4 significant digits."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value * scale:.4g}" if abs(value * scale) < 1e4 else f"{value * scale:.4e}"
    return esc(value)


def fmt2(value: Any, scale: float = 1.0) -> str:
    """Probe metrics with two decimals, as the study prints them."""
    return "—" if value is None else f"{float(value) * scale:.2f}"


def table(header: Sequence[str], rows: Sequence[tuple[str, Sequence[Any]]]) -> str:
    """An HTML table; each row is (css class, cells), cells already formatted."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        f'<tr class="{cls}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
        for cls, cells in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def image(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def random_banner(stores: Sequence[Store], probes: Sequence[dict]) -> str:
    """A red box naming every store or probe made with random weights."""
    names = [s.url for s in stores if str(s.meta.get("weights")).lower() == "random"]
    names += [p["store"].get("url", "?") + f" (probe {p['probe']})" for p in probes
              if str(p["store"].get("weights")).lower() == "random"]
    if not names:
        return ""
    return ('<div class="random">⚠ RANDOM WEIGHTS — these results come from randomly '
            "initialised models, not trained ones; they say nothing about the study's "
            "claims:<br>" + "<br>".join(esc(n) for n in names) + "</div>")


def provenance_html(stores: Sequence[Store], labels: Sequence[str]) -> str:
    """Rows: provenance fields; columns: stores."""
    provs = [provenance(s) for s in stores]
    for prov in provs:
        prov["arrays"] = ", ".join(prov["arrays"])
    rows = [("", [esc(k), *(esc(p[k]) for p in provs)]) for k in provs[0]]
    return table(["field", *labels], rows)


def stats_html(stats: dict[str, dict[str, Any]]) -> str:
    """Rows: statistics by plain name, definition and unit; columns: stores (value, n)."""
    return stats_table(stats)


def section_html(name: str, result: dict[str, Any], figures: Figures | None = None) -> str:
    figures = figures or Figures()
    parts = [f"<h2>{esc(ANALYSES[name].title if name in ANALYSES else name)}</h2>"]
    parts += [f'<p class="note">{esc(n)}</p>' for n in result.get("notes", [])]
    if result.get("stats"):
        parts.append(stats_html(result["stats"]))
    parts += [figures.figure(p, caption_for(p)) for p in result["figures"]]
    parts.append(f'<p class="note">Data of each figure: <code>{esc(name)}/*.json</code> '
                 "next to its PNG.</p>")
    return "".join(parts)


def _metric(result: dict, group: str, key: str) -> Any:
    return (result["metrics"].get(group) or {}).get(key)


def setup_of(result: dict) -> dict[str, Any]:
    """Weights, image size and token mode of the store a result was trained on."""
    attrs = (result.get("provenance", {}).get("train") or {}).get("attrs") or {}
    return {"weights": attrs.get("weights", result["store"].get("weights")),
            "img_size": attrs.get("img_size"), "token_mode": attrs.get("token_mode")}


def study_mismatch(result: dict) -> list[str]:
    """Why the study's row may not sit beside this result (empty: the setups match)."""
    if study_name(result["store"].get("model")) is None:
        return ["the study did not probe this model"]
    setup = setup_of(result)
    return [f"{key} {setup[key]} (the study's: {want})" for key, want in STUDY_SETUP.items()
            if setup[key] is not None and setup[key] != want]


def _ours_row(result: dict, cells: Sequence[Any]) -> tuple[str, list[str]]:
    s = setup_of(result)
    name = (f"ours: {result['store'].get('model')} ({s['weights']}, {s['img_size']} px, "
            f"tokens {s['token_mode']})")
    return "ours", [esc(name), *cells]


def _study_note(result: dict, width: int) -> tuple[str, list[str]] | None:
    """A row that says why no study row is shown, for a study model on another setup."""
    reasons = study_mismatch(result)
    if not reasons or reasons == ["the study did not probe this model"]:
        return None
    return "study", [esc("no study row: " + "; ".join(reasons)), *([""] * (width - 1))]


def probe_table(kind: str, results: Sequence[dict]) -> str:
    """Tables 1-3: one row per probe result, the study's row under it when the model matches."""
    number, caption, study = TABLES[kind]
    columns = {
        "position": [("normal", "top1", 100), ("outlier", "top1", 100),
                     ("normal", "distance", 1), ("outlier", "distance", 1)],
        "reconstruct": [("normal", "l2", 1), ("outlier", "l2", 1),
                        ("normal", "mse", 1), ("outlier", "mse", 1)],
        "classify": [("cls", "top1", 100), ("normal", "top1", 100), ("outlier", "top1", 100)],
    }[kind]
    header = ["model", *(metric_header(g, k) for g, k, _ in columns)]
    rows = []
    for result in results:
        rows.append(_ours_row(result, [metric_cell(result, g, k, s) for g, k, s in columns]))
        name = study_name(result["store"].get("model"))
        note = _study_note(result, len(header))
        if note:
            rows.append(note)
        elif name in study:
            rows.append(("study", [esc(f"study: {name}"),
                                   *(fmt2(study[name].get(g, {}).get(k)) for g, k, _ in columns)]))
    return f"<h3>Table {number}. {esc(caption)}</h3>" + table(header, rows)


def linear_tables(results: Sequence[dict]) -> str:
    """Table 4 (official heads, without / with registers) and Table 5 (representations)."""
    rows4 = []
    for result in results:
        head = _metric(result, "head", "top1")
        if head is None:
            continue
        regs = "+reg" if "reg" in str(result["store"].get("model")) else ""
        cell = metric_cell(result, "head", "top1", 100)
        rows4.append(_ours_row(result, [cell if not regs else "—", cell if regs else "—"]))
        name = study_name(result["store"].get("model"))
        if name and not study_mismatch(result):
            base = name.replace("+reg", "")
            rows4.append(("study", [esc(f"study: {base} / {base}+reg"),
                                    fmt2(TABLE4.get(base, {}).get("head")),
                                    fmt2(TABLE4.get(base + "+reg", {}).get("head"))]))
    matched = [TABLE5[n] for n, r in ((study_name(r["store"].get("model")), r) for r in results)
               if n in TABLE5 and not study_mismatch(r)]
    combos = list(dict.fromkeys([*(k for r in results for k in r["metrics"]),
                                 *(k for t in matched for k in t)]))
    rows5 = []
    for result in results:
        rows5.append(_ours_row(result, [metric_cell(result, c, "top1", 100) for c in combos]))
        name = study_name(result["store"].get("model"))
        if name in TABLE5 and not study_mismatch(result):
            rows5.append(("study", [esc(f"study: {name}"),
                                    *(fmt2(TABLE5[name].get(c)) for c in combos)]))
    return (
        "<h3>Table 4. Official pretrained heads, ImageNet-1K top-1 (%)</h3>"
        + (table(["model", "no registers", "with registers"], rows4) if rows4 else
           '<p class="note">no linear probe evaluated an official head</p>')
        + "<h3>Table 5. Linear heads on representations, top-1 (%)</h3>"
        + table(["model", *(f"{c} top-1 (%)" for c in combos)], rows5)
    )


def probes_html(probes: Sequence[dict]) -> str:
    if not probes:
        return '<h2>Probe results (study Tables 1-5)</h2><p class="note">no probe results given</p>'
    parts = ["<h2>Probe results (study Tables 1-5)</h2>",
             ('<p class="note">Our rows first; the study\'s numbers in grey italics under each '
              "row whose setup matches the study's (its timm model, pretrained weights, 224 px, "
              "all tokens); otherwise a grey row says why none is shown. Accuracies in %.</p>")]
    for kind in TABLES:
        chosen = [p for p in probes if p["probe"] == kind]
        if chosen:
            parts.append(probe_table(kind, chosen))
    linear = [p for p in probes if p["probe"] == "linear"]
    if linear:
        parts.append(linear_tables(linear))
    missing = [f"Table {n} ({kind})" for kind, (n, _, _) in TABLES.items()
               if not any(p["probe"] == kind for p in probes)]
    missing += [] if linear else ["Tables 4-5 (linear)"]
    if missing:
        parts.append(f'<p class="note">No probe results for {esc(", ".join(missing))}.</p>')
    return "".join(parts)


def render_html(stores: Sequence[Store], sections: dict[str, dict], probes: Sequence[dict],
                figures: Figures | None = None) -> str:
    labels = store_labels(stores)
    figures = figures or Figures()
    body = [
        random_banner(stores, probes),
        "<h1>vitreg report</h1>",
        (f'<p class="note">Stores: {", ".join(esc(lb) for lb in labels)}. Outlier: a patch '
         "token whose L2 norm (before the final LayerNorm) is above the 98th percentile of every "
         "patch norm of its store; [CLS] and registers never count.</p>"),
        "<h2>Provenance</h2>", provenance_html(stores, labels),
        *(section_html(name, result, figures) for name, result in sections.items()),
        probes_html(probes),
    ]
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>vitreg report</title>"
            f"<style>{CSS}{PRESENTATION_CSS}</style></head><body>{''.join(body)}</body></html>")


def load_probes(paths: Sequence[str | Path]) -> list[dict]:
    return [json.loads(Path(p).read_text()) for p in paths]


def run_report(
    stores: Sequence[str | Store], *, out: str | Path, probes: Sequence[str | Path] = (),
    allow_partial: bool = False, **options: Any,
) -> Path:
    """Run every analysis into `out/<name>/` and write `out/report.html`; return its path."""
    out = Path(out)
    opened = open_stores(stores, allow_partial=allow_partial)
    sections = {entry.name: entry.run(opened, out=out / entry.name, **options)
                for entry in registered()}
    path = out / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(opened, sections, load_probes(probes), Figures(base=out)),
                    encoding="utf-8")
    return path
