"""Token-norm distributions (the study's Claims 1-2, Figure 4): histograms of
patch-token norms with the outlier threshold, [CLS] and register norms apart,
and per-store statistics. Reads `status` and `norms` only."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from vitreg.cache import Store
from vitreg.cache.names import NORMS

from .common import (
    COLOURS,
    Result,
    open_stores,
    patch_part,
    plain_log_y,
    read_sample,
    register_analysis,
    save_figure,
    store_labels,
    threshold_for,
    wrap,
)
from .progress import analysis_bar, stepped

BINS = 100
#: Each displayed bin is split into this many fine bins, from which the median
#: is found exactly with one small partition instead of one over every norm.
FINE = 64


def bimodality_coefficient(values: np.ndarray) -> float:
    """Sarle's bimodality coefficient (g^2 + 1) / (k + 3 (n-1)^2 / ((n-2)(n-3))).

    g is the sample skewness and k the excess kurtosis, both bias-corrected
    (SAS/SPSS formulas). Above 5/9 (0.555, a uniform distribution) suggests a
    bimodal or heavily skewed distribution.
    """
    x = np.asarray(values)
    x = x if x.dtype in (np.float32, np.float64) else x.astype(np.float64)
    n = x.size
    if n < 4:
        return float("nan")
    d = (x - x.dtype.type(x.mean(dtype=np.float64))).ravel()  # a new array: ravel is free
    d2 = d * d
    # central moments; np.dot sums float32 in BLAS blocks, accurate enough here
    m2 = float(d2.sum(dtype=np.float64)) / n
    m3, m4 = float(np.dot(d2, d)) / n, float(np.dot(d2, d2)) / n
    if m2 == 0:
        return float("nan")
    g1, g2 = m3 / m2**1.5, m4 / m2**2 - 3.0
    skew = g1 * np.sqrt(n * (n - 1)) / (n - 2)
    kurt = ((n + 1) * g2 + 6) * (n - 1) / ((n - 2) * (n - 3))
    return float((skew**2 + 1) / (kurt + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3))))


def fine_histogram(values: np.ndarray, top: float, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Bin index of every (non-negative) value over [0, top] in `bins` equal bins, and counts."""
    scale = np.float32(bins / top) if top > 0 else np.float32(0)
    idx = (values * scale).astype(np.int32)
    np.clip(idx, 0, bins - 1, out=idx)
    return idx, np.bincount(idx.ravel(), minlength=bins)


def median_from_histogram(values: np.ndarray, idx: np.ndarray, counts: np.ndarray) -> float:
    """Exactly `numpy.median(values)`, partitioning only the values of the middle bin(s)."""
    n = values.size
    lo_k, hi_k = (n - 1) // 2, n // 2  # the middle order statistics (equal when n is odd)
    cum = np.cumsum(counts)
    b_lo, b_hi = np.searchsorted(cum, [lo_k + 1, hi_k + 1])
    below = int(cum[b_lo - 1]) if b_lo > 0 else 0
    middle = values[(idx >= b_lo) & (idx <= b_hi)]
    ks = [lo_k - below, hi_k - below]
    part = np.partition(middle, ks)
    return float((float(part[ks[0]]) + float(part[ks[1]])) / 2)


def norm_stats(patch: np.ndarray, threshold: float, top: float) -> dict[str, Any]:
    """Median, threshold, max, fraction above it, max/median and bimodality of patch norms,
    and their histogram over [0, top] in BINS bins. `patch` may be a strided view: it is
    never copied whole."""
    idx, fine = fine_histogram(patch, top, BINS * FINE)
    median = median_from_histogram(patch, idx, fine)
    peak = float(patch.max())
    return {
        "patch_tokens": int(patch.size),
        "median": median,
        "threshold": float(threshold),
        "max": peak,
        "fraction_above_threshold": float(np.count_nonzero(patch > threshold) / patch.size),
        "max_over_median": peak / median if median > 0 else float("inf"),
        "bimodality_coefficient": bimodality_coefficient(patch),
        "histogram": fine.reshape(BINS, FINE).sum(axis=1),
    }


def store_norms(store: Store, *, images: int, seed: int) -> dict[str, Any]:
    """Norms of a seeded sample of ok rows, and the store's outlier threshold."""
    rows, data = read_sample(store, [NORMS], images, seed)
    norms = data[NORMS]
    return {"store": store, "rows": rows, "norms": norms,
            "threshold": threshold_for(store, patch_part(norms, store), rows)}


def summarise(part: dict[str, Any], edges: np.ndarray) -> dict[str, Any]:
    """Statistics and histograms (over `edges`) of patch, [CLS] and register norms."""
    store, norms = part["store"], part["norms"]
    registers = norms[:, store.geometry.register_slice]
    cls = norms[:, 0] if store.geometry.has_cls else norms[:, :0]  # none without [CLS]
    stats = norm_stats(patch_part(norms, store), part["threshold"], float(edges[-1]))
    stats.update(images=int(part["rows"].size),
                 cls_median=float(np.median(cls)) if cls.size else None,
                 register_median=float(np.median(registers)) if registers.size else None)
    hists = {"patch_counts": stats.pop("histogram"),
             "cls_counts": np.histogram(cls, bins=edges)[0]}
    if registers.size:
        hists["register_counts"] = np.histogram(registers, bins=edges)[0]
    return {"stats": stats, **hists}


def density(counts: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """A histogram's counts as a density: it integrates to 1 over the bins."""
    total = counts.sum()
    return counts / (total * np.diff(edges)) if total else counts.astype(float)


def plot_norms(summaries: list[dict[str, Any]], labels: list[str], edges: np.ndarray) -> Figure:
    """Patch-norm densities (log scale) with thresholds; [CLS] and registers in a second panel."""
    # legends go under the axes: store names are long
    entries = 2 * len(summaries)
    height = 4.2 + 0.28 * entries
    fig = Figure(figsize=(12, height))
    fig.subplots_adjust(left=0.07, right=0.99, bottom=(0.75 + 0.28 * entries) / height,
                        top=1 - 0.35 / height, wspace=0.2)
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    for summary, label, colour in zip(summaries, labels, COLOURS * 4):
        # densities: stores of different sizes share one scale
        counts = density(summary["patch_counts"], edges)
        ax.stairs(counts, edges, color=colour, fill=True, alpha=0.35, label=wrap(label, 60))
        ax.stairs(counts, edges, color=colour)
        thr = summary["stats"]["threshold"]
        ax.axvline(thr, color=colour, ls="--", lw=1.5, label=f"98th percentile = {thr:.3g}")
        ax2.stairs(density(summary["cls_counts"], edges), edges, color=colour, lw=2,
                   label=wrap(f"[CLS] · {label}", 60))
        if "register_counts" in summary:
            ax2.stairs(density(summary["register_counts"], edges), edges, color=colour, ls=":",
                       lw=2, label=wrap(f"registers · {label}", 60))
    ax.set_xlabel("L2 norm of output patch token (before final LayerNorm)")
    ax.set_ylabel("density (per unit of norm, log scale)")
    # explicit title heights: matplotlib's automatic title placement drew the axes twice
    ax.set_title("Patch-token norm distribution (study Fig. 4)", y=1.01)
    ax2.set_xlabel("L2 norm (before final LayerNorm)")
    ax2.set_ylabel("density (log scale)")
    ax2.set_title("[CLS] and register tokens", y=1.01)
    # half of one token's density: the smallest non-empty bin stays visible
    one_token = min(1 / (max(s["patch_counts"].sum(), 1) * float(np.diff(edges)[0]))
                    for s in summaries)
    for a in (ax, ax2):
        plain_log_y(a)
        a.set_ylim(bottom=0.5 * one_token)
        a.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), frameon=False)
    return fig


@register_analysis(
    "norms", order=1, title="Token norms (Claims 1-2, study Fig. 4)",
    help="Norm histograms, 98th-percentile threshold and statistics (Claims 1-2).")
def run_norms(
    stores: Sequence[str | Store], *, out: str | Path, images: int = 5000, seed: int = 42,
    allow_partial: bool = False, block: int | None = None,
) -> Result:
    """Histograms and statistics of token norms of each store; writes `out/norms.png/.json`."""
    opened = open_stores(stores, allow_partial=allow_partial, block=block)
    labels = store_labels(opened)
    with analysis_bar("norms", len(opened) + 1) as advance:  # each store, then the figure
        parts = [store_norms(s, images=images, seed=seed) for s in stepped(opened, advance)]
        result = _norms_result(parts, labels, images, seed, Path(out))
        advance(1)
    return result


def _norms_result(parts: list[dict[str, Any]], labels: list[str], images: int, seed: int,
                  out: Path) -> Result:
    edges = np.linspace(0.0, max(float(p["norms"].max()) for p in parts) * 1.02, BINS + 1)
    summaries = [summarise(p, edges) for p in parts]
    data = {"bin_edges": edges, "images": images, "seed": seed,
            "bimodality": "Sarle's bimodality coefficient over patch-token norms (>5/9 bimodal)",
            "stores": [{"label": lb, **sm} for lb, sm in zip(labels, summaries)]}
    png = save_figure(plot_norms(summaries, labels, edges), data, out / "norms.png",
                      tight=False)
    return {"figures": [png], "stats": {lb: sm["stats"] for lb, sm in zip(labels, summaries)}}
