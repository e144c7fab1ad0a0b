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
from vitreg.core import InputError
from vitreg.core.options import resolve

from .common import ANALYSES, open_stores, provenance, registered, report_options, store_labels
from .presentation import CSS as PRESENTATION_CSS
from .presentation import Figures, caption_for, metric_cell, metric_header, stats_table
from .progress import analysis_bar
from .study import (
    DEVIATIONS,
    TABLE4,
    TABLE5,
    TABLE_OF,
    TABLES,
    result_setup,
    result_study_name,
    setup_differences,
    store_truncation,
    truncated_counts,
)

CSS = """
body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1300px;color:#222}
h1{margin-bottom:4px} h2{border-bottom:2px solid #ccc;padding-bottom:4px;margin-top:36px}
table{border-collapse:collapse;margin:10px 0 18px;font-size:14px}
td,th{border:1px solid #bbb;padding:4px 9px;text-align:right;max-width:520px;overflow-wrap:anywhere}
th{background:#eee} td:first-child,th:first-child{text-align:left}
tr.study td{color:#555;background:#f6f6f6;font-style:italic}
.deviates{color:#a40;font-weight:bold} .same{color:#070}
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


# -- the study's tables: our rows beside the study's, each difference marked ----------
def setup_label(result: dict) -> str:
    """One line naming the setup of a result's store and protocol."""
    s = result_setup(result)
    protocol = (s["selection"] or {}).get("protocol") or \
        ("official head, no training" if s["head"] else "not recorded")
    counted = truncated_counts(s)
    kept = ("" if counted is None else
            f" ({counted[0]} of {counted[1]} images with more outliers than K/2)")
    return (f"{s['pretrained_cfg'] or s['model']}, {s['weights']}, {s['img_size']} px, "
            f"{s['preprocessing_preset'] or '?'}, {s['precision'] or '?'}, tokens "
            f"{s['token_mode']}{kept}, protocol {protocol}")


def _ours_row(result: dict, cells: Sequence[Any], table_number: int) -> tuple[str, list[str]]:
    diffs = setup_differences(result, table_number)
    mark = "; ".join(diffs) if diffs else "none: the study's setup"
    return "ours", [esc(f"ours: {setup_label(result)}"), *cells,
                    f'<span class="{"deviates" if diffs else "same"}">{esc(mark)}</span>']


def _study_row(name: str, cells: Sequence[str]) -> tuple[str, list[str]]:
    return "study", [esc(f"study: {name}"), *cells, ""]


DIFF_HEADER = "differences from the study's setup"


def probe_table(kind: str, results: Sequence[dict]) -> str:
    """Tables 1-3: each result's row, the study's row under it whenever the study has one."""
    number, caption, study = TABLES[kind]
    columns = {
        "position": [("normal", "top1", 100), ("outlier", "top1", 100),
                     ("normal", "distance", 1), ("outlier", "distance", 1)],
        "reconstruct": [("normal", "l2", 1), ("outlier", "l2", 1),
                        ("normal", "mse", 1), ("outlier", "mse", 1)],
        "classify": [("cls", "top1", 100), ("normal", "top1", 100), ("outlier", "top1", 100)],
    }[kind]
    header = ["model", *(metric_header(g, k) for g, k, _ in columns), DIFF_HEADER]
    rows = []
    for result in results:
        rows.append(_ours_row(result, [metric_cell(result, g, k, s) for g, k, s in columns],
                              number))
        name = result_study_name(result)
        if name in study:
            rows.append(_study_row(name, [fmt2(study[name].get(g, {}).get(k))
                                          for g, k, _ in columns]))
    return f"<h3>Table {number}. {esc(caption)}</h3>" + table(header, rows)


def head_table(results: Sequence[dict]) -> str:
    """Table 4: official heads, without and with registers, beside the study's."""
    rows = []
    for result in results:
        head = _metric(result, "head", "top1")
        if head is None:
            continue
        name = result_study_name(result) or ""
        regs = "+reg" in name or "reg" in str(result_setup(result)["model"])
        cell = metric_cell(result, "head", "top1", 100)
        rows.append(_ours_row(result, [cell if not regs else "—", cell if regs else "—"], 4))
        if name in TABLE4:
            rows.append(_study_row(name, [fmt2(TABLE4[name]["head"]) if not regs else "—",
                                          fmt2(TABLE4[name]["head"]) if regs else "—"]))
    if not rows:
        return ('<h3>Table 4. Official pretrained heads, ImageNet-1K top-1 (%)</h3><p class='
                '"note">no linear probe evaluated an official head (give a DINOv2 model\'s '
                '<code>head</code> file in the plan)</p>')
    return ("<h3>Table 4. Official pretrained heads, ImageNet-1K top-1 (%)</h3>"
            + table(["model", "no registers", "with registers", DIFF_HEADER], rows))


def linear_tables(results: Sequence[dict]) -> str:
    """Table 4 (official heads) and Table 5 (linear heads on representations)."""
    trained = [r for r in results if any(k != "head" for k in r["metrics"])]
    named = [TABLE5[n] for n in map(result_study_name, trained) if n in TABLE5]
    combos = list(dict.fromkeys([*(k for r in trained for k in r["metrics"] if k != "head"),
                                 *(k for t in named for k in t if k != "head")]))
    rows5 = []
    for result in trained:
        rows5.append(_ours_row(result, [metric_cell(result, c, "top1", 100) for c in combos],
                               5))
        name = result_study_name(result)
        if name in TABLE5:
            rows5.append(_study_row(name, [fmt2(TABLE5[name].get(c)) for c in combos]))
    return (head_table(results)
            + "<h3>Table 5. Linear heads on representations, top-1 (%)</h3>"
            + (table(["model", *(f"{c} top-1 (%)" for c in combos), DIFF_HEADER], rows5)
               if rows5 else
               '<p class="note">no linear head trained</p>'))


def sampled_html(stores: Sequence[Store], labels: Sequence[str]) -> str:
    """Each sampled store: how many images had more outliers than the K/2 it kept."""
    rows = []
    for store, label in zip(stores, labels):
        t = store_truncation(store)
        if t is not None:
            rows.append(("", [esc(label), esc(t["k"]), esc(t["images"]),
                              esc(t["truncated_images"]), esc(t["outliers_not_kept"]),
                              esc(t["outliers"]), esc(t["most_outliers"])]))
    if not rows:
        return ""
    return ("<h2>Sampled stores and the study's setup</h2>"
            '<p class="note">A <code>sampled:K</code> store keeps the K/2 highest-norm patch '
            "tokens of each image (and K/2 drawn at random): on an image with at most K/2 "
            "outliers it holds every outlier, which is the study's setup (all tokens). "
            "Outliers by each store's own 98th percentile.</p>"
            + table(["store", "K", "images", "images with more than K/2 outliers",
                     "outliers not kept", "outliers", "most outliers in one image"], rows))


def _flat(metrics: dict[str, Any]) -> list[tuple[str, Any]]:
    """A result's metrics as (name, value): `group.key` for a group's."""
    pairs: list[tuple[str, Any]] = []
    for name, value in metrics.items():
        if isinstance(value, dict):
            pairs += [(f"{name}.{key}", v) for key, v in value.items()]
        else:
            pairs.append((name, value))
    return pairs


def other_probes_html(probes: Sequence[dict]) -> str:
    """Results of probes that fill none of the study's tables (a plugin's), each
    metric as it was recorded."""
    others = [p for p in probes if p["probe"] not in TABLE_OF]
    if not others:
        return ""
    rows = [("", [esc(p["probe"]), esc(setup_label(p)),
                  esc("; ".join(f"{k} {fmt(v)}" for k, v in _flat(p["metrics"])))])
            for p in others]
    return ("<h3>Other probes (no table of the study)</h3>"
            + table(["probe", "setup", "metrics"], rows))


def deviations_html() -> str:
    """Every choice the study leaves open, and what vitreg chose."""
    rows = [("", [esc(topic), esc(study), esc(ours)]) for topic, study, ours in DEVIATIONS]
    return ("<h3>Deviations from the study</h3>"
            '<p class="note">What the study leaves open or states differently, and what vitreg '
            "does. A row's own differences from the study's setup are marked in its last "
            "column.</p>" + table(["choice", "the study", "vitreg"], rows))


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
    parts.append(other_probes_html(probes))
    parts.append(deviations_html())
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
        sampled_html(stores, labels),
        *(section_html(name, result, figures) for name, result in sections.items()),
        probes_html(probes),
    ]
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>vitreg report</title>"
            f"<style>{CSS}{PRESENTATION_CSS}</style></head><body>{''.join(body)}</body></html>")


def load_probes(paths: Sequence[str | Path]) -> list[dict]:
    """The probe results JSON files; one that is not a `vitreg probe` result is refused."""
    return [_load_probe(Path(p)) for p in paths]


def _load_probe(path: Path) -> dict:
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"--probes {path} is not a JSON file ({exc}); give the results "
                         "file that `vitreg probe ... --out` wrote") from exc
    if not isinstance(result, dict) or not {"probe", "metrics"} <= set(result):
        raise InputError(f"--probes {path} is JSON but not a `vitreg probe` result (no "
                         "`probe` and `metrics` keys); give the file that `vitreg probe` wrote")
    return result


def run_report(
    stores: Sequence[str | Store], *, out: str | Path, probes: Sequence[str | Path] = (),
    **options: Any,
) -> Path:
    """Run every registered analysis into `out/<name>/`, each with the `options` it takes
    (`common.report_options()`: every analysis's, once; another name is refused), and
    write `out/report.html`; return its path."""
    out = Path(out)
    opts = resolve(report_options(), options, what="the report")
    results = load_probes(probes)  # a wrong file is refused before any analysis runs
    opened = open_stores(stores, allow_partial=opts.pop("allow_partial"), block=opts.pop("block"))
    sections = {entry.name: entry.call(opened, out=out / entry.name,
                                       **{o.name: opts[o.name] for o in entry.options
                                          if o.name in opts})
                for entry in registered()}
    path = out / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    with analysis_bar("report", sum(len(r["figures"]) for r in sections.values())) as advance:
        figures = Figures(base=out, embedded=advance)  # a step: one figure made a thumbnail
        path.write_text(render_html(opened, sections, results, figures), encoding="utf-8")
    return path
