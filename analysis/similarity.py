"""Neighbour similarity of outlier and normal patch tokens (the study's Claim 3,
Figure 3): how much more likely an outlier is to sit in a redundant region.
Reads `status`, `norms` and `neighbor_cos` only."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from vitreg.cache import Store
from vitreg.cache.names import NEIGHBOR_COS
from vitreg.core.numbers import Range
from vitreg.core.options import Option

from .common import (
    COLOURS,
    Result,
    open_stores,
    register_analysis,
    sample_outliers,
    save_figure,
    store_labels,
    wrap,
)
from .progress import analysis_bar, stepped

#: a cosine similarity (--redundant-cut)
COSINE = Range(-1, 1)

#: Default definition of "redundant": neighbour similarity above this percentile
#: of the normal tokens' neighbour similarity.
REDUNDANT_PERCENTILE = 90.0


def redundancy_ratio(
    cos: np.ndarray, outlier: np.ndarray, *, percentile: float = REDUNDANT_PERCENTILE,
    cut: float | None = None,
) -> dict[str, float]:
    """P(redundant | outlier) / P(redundant | normal).

    A patch is redundant when its mean cosine similarity with its 4-neighbours
    is above `cut`, by default the `percentile` of the normal tokens' values.
    """
    cos = np.asarray(cos, dtype=np.float32).ravel()
    outlier = np.asarray(outlier, dtype=bool).ravel()
    normal_cos, outlier_cos = cos[~outlier], cos[outlier]
    given = cut is not None
    if not given:
        cut = float(np.percentile(normal_cos, percentile))
    p_out = float((outlier_cos > cut).mean()) if outlier_cos.size else float("nan")
    p_norm = float((normal_cos > cut).mean())
    return {
        "cut": float(cut), "cut_percentile_of_normal": None if given else percentile,
        "p_redundant_outlier": p_out, "p_redundant_normal": p_norm,
        "ratio": p_out / p_norm if p_norm > 0 else float("inf"),
        "outliers": int(outlier_cos.size), "normals": int(normal_cos.size),
        "median_cos_outlier": float(np.median(outlier_cos)) if outlier_cos.size else None,
        "median_cos_normal": float(np.median(normal_cos)),
    }


def store_similarity(
    store: Store, *, images: int, seed: int, percentile: float, cut: float | None,
) -> dict[str, Any]:
    rows, data, outlier = sample_outliers(store, [NEIGHBOR_COS], images, seed)
    cos = data[NEIGHBOR_COS].astype(np.float32)
    stats = redundancy_ratio(cos, outlier, percentile=percentile, cut=cut)
    stats["images"] = int(rows.size)
    return {"cos": cos.ravel(), "outlier": outlier.ravel(), "stats": stats}


def plot_similarity(parts: list[dict[str, Any]], labels: list[str]) -> tuple[Figure, dict]:
    """One panel per store: density of neighbour similarity, outliers vs normal tokens."""
    n = len(parts)
    fig = Figure(figsize=(min(5.0 * n, 20), 3.8))
    axes = np.atleast_1d(fig.subplots(1, n, squeeze=False)[0])
    edges = np.linspace(-1.0, 1.0, 81)
    data: dict[str, Any] = {"bin_edges": edges, "stores": []}
    for ax, part, label in zip(axes, parts, labels):
        normal, outlier = part["cos"][~part["outlier"]], part["cos"][part["outlier"]]
        dens_n = np.histogram(normal, bins=edges, density=True)[0]
        dens_o = np.histogram(outlier, bins=edges, density=True)[0] if outlier.size else \
            np.zeros(edges.size - 1)
        ax.stairs(dens_n, edges, color=COLOURS[0], fill=True, alpha=0.4,
                  label=f"normal ({normal.size:,})")
        ax.stairs(dens_o, edges, color=COLOURS[3], fill=True, alpha=0.4,
                  label=f"outlier ({outlier.size:,})")
        st = part["stats"]
        ax.axvline(st["cut"], color="k", ls="--", lw=1, label=f"redundant cut {st['cut']:.3f}")
        ax.set_title(f"{wrap(label, 50)}\noutlier {st['ratio']:.2f}x more likely redundant",
                     fontsize=9)
        ax.set_xlabel("mean cosine similarity with 4 neighbours (patch embedding)")
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
        data["stores"].append({"label": label, "normal_density": dens_n,
                               "outlier_density": dens_o, "stats": st})
    fig.suptitle("Neighbour similarity of outlier vs normal patches (study Fig. 3)")
    fig.tight_layout()
    return fig, data


#: `--redundant-percentile` / `--redundant-cut` (the report takes them too)
SIMILARITY_OPTIONS = (
    Option("redundant_percentile", help="'Redundant' = neighbour similarity above this "
           "percentile of normal tokens'.", range=Range(0, 100)),
    Option("redundant_cut", help="Absolute neighbour-similarity cut for 'redundant' "
           "(overrides --redundant-percentile).", type=float, range=COSINE),
)


def _similarity_summary(result: Result, _: dict[str, Any]) -> str:
    return "\n".join(f"{label}: outliers {stats['ratio']:.3g}x more likely redundant"
                     for label, stats in result["stats"].items())


@register_analysis(
    "similarity", order=2, title="Neighbour similarity of outliers (Claim 3, study Fig. 3)",
    help="Neighbour similarity of outlier vs normal tokens (Claim 3).",
    options=SIMILARITY_OPTIONS, summary=_similarity_summary)
def run_similarity(
    stores: Sequence[str | Store], *, out: str | Path, images: int = 5000, seed: int = 42,
    redundant_percentile: float = REDUNDANT_PERCENTILE, redundant_cut: float | None = None,
    allow_partial: bool = False, block: int | None = None,
) -> Result:
    """Neighbour-similarity distributions and the redundancy ratio; writes `out/similarity.*`."""
    opened = [s for s in open_stores(stores, allow_partial=allow_partial, block=block)
              if NEIGHBOR_COS in s]
    if not opened:
        return {"figures": [], "stats": {}, "notes": ["no store has `neighbor_cos`"]}
    labels = store_labels(opened)
    with analysis_bar("similarity", len(opened) + 1) as advance:  # each store, the figure
        parts = [store_similarity(s, images=images, seed=seed, percentile=redundant_percentile,
                                  cut=redundant_cut) for s in stepped(opened, advance)]
        fig, data = plot_similarity(parts, labels)
        data.update(images=images, seed=seed, redundant=(
            f"neighbour similarity > {redundant_cut}" if redundant_cut is not None else
            f"neighbour similarity > the normal tokens' {redundant_percentile:g}th percentile"))
        png = save_figure(fig, data, Path(out) / "similarity.png")
        advance(1)
    return {"figures": [png], "stats": {lb: p["stats"] for lb, p in zip(labels, parts)},
            "notes": [data["redundant"]]}
