"""Attention and feature maps (the study's Figures 1, 2, 5, 6, 7): per image,
input | [CLS] attention | token-norm map, one row per store; q/k/v norm maps
(Appendix A.1) and per-block norm and q/k/v norm maps (A.2) when stored; where outliers fall
over the grid; and the first block at which high-norm tokens appear."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from vitreg.cache import Store
from vitreg.cache.names import (
    ATTENTION,
    BLOCKS_NORMS,
    BLOCKS_QKV_NORMS,
    KEY,
    LABEL,
    NORMS,
    PIXELS,
    QKV_NORMS,
)
from vitreg.core import InputError
from vitreg.core.numbers import COUNT, COUNT_OR_ZERO
from vitreg.core.options import Option

from .common import (
    COLOURS,
    Result,
    as_grid,
    open_stores,
    patch_part,
    plain_log_y,
    read_rows,
    register_analysis,
    sample_outliers,
    save_figure,
    slug,
    store_labels,
    wrap,
)
from .grid import GridWriter
from .progress import analysis_bar, stepped

#: How many images `--top` picks by default, and how many rows the block analysis reads.
TOP_K = 3
BLOCK_IMAGES = 500
#: A block "has" the high-norm tokens when at least this fraction of the final
#: outliers are above that block's own 98th percentile of patch norms.
FIRST_BLOCK_FRACTION = 0.5


def store_keys(store: Store) -> np.ndarray:
    return np.asarray(store.array(KEY)[:], dtype=object)


def top_rows(store: Store, k: int) -> np.ndarray:
    """The k ok rows whose highest patch-token norm is largest."""
    rows = store.ok_rows()
    norms = patch_part(read_rows(store, [NORMS], rows)[NORMS], store)
    order = np.argsort(-norms.max(axis=1), kind="stable")[:k]
    return rows[order]


def choose_keys(
    store: Store, *, indices: Sequence[int] = (), keys: Sequence[str] = (), top: int = TOP_K,
) -> list[str]:
    """Image keys to draw: given keys, else rows by index, else the `top` by max norm.
    A key or index that names no ok row is refused (it would draw a blank figure)."""
    if keys:
        return [str(k) for k in keys]
    all_keys = store_keys(store)
    bad = [int(i) for i in indices if not 0 <= int(i) < len(all_keys) or not store.is_ok(int(i))]
    if bad:
        raise InputError(f"--index {bad[0]}: not an ok row of {store.url} (rows 0 to "
                         f"{len(all_keys) - 1}; failed and pending rows have no maps)")
    rows = np.asarray(indices, dtype=np.int64) if len(indices) else top_rows(store, top)
    return [str(all_keys[r]) for r in rows]


def check_keys(opened: Sequence[Store], keys: Sequence[str]) -> None:
    """Refuse a --key that no store holds in an ok row (it would draw blank figures)."""
    if not keys:
        return
    ok: set[str] = set()
    for store in opened:
        ok.update(str(k) for k in store_keys(store)[store.ok_rows()])
    unknown = [str(k) for k in keys if str(k) not in ok]
    if unknown:
        raise InputError(f"--key {unknown[0]!r}: no ok row of the store(s) has this key "
                         f"({len(unknown)} of {len(keys)} key(s) unknown); the store's `key` "
                         "array lists them")


def row_of(store: Store, key: str, keys_cache: dict[str, np.ndarray]) -> int | None:
    """The ok row holding `key` in `store`, or None."""
    keys = keys_cache.setdefault(store.url, store_keys(store))
    hits = np.flatnonzero(keys == key)
    ok = [int(r) for r in hits if store.is_ok(r)]
    return ok[0] if ok else None


def image_maps(store: Store, row: int) -> dict[str, Any]:
    """Grids of one row: attention, norms, outlier mask, and pixels/qkv/blocks when stored."""
    names = [n for n in (NORMS, ATTENTION, PIXELS, QKV_NORMS, BLOCKS_NORMS,
                         BLOCKS_QKV_NORMS) if n in store]
    data = {k: v[0] for k, v in read_rows(store, names, np.array([row])).items()}
    out: dict[str, Any] = {"norm": as_grid(patch_part(data[NORMS], store), store)}
    out["outlier"] = out["norm"] > store.threshold()
    if ATTENTION in data:
        out["attention"] = as_grid(patch_part(data[ATTENTION].astype(np.float32), store), store)
    if PIXELS in data:
        out["pixels"] = data[PIXELS]
    if QKV_NORMS in data:
        out["qkv"] = as_grid(patch_part(data[QKV_NORMS].astype(np.float32), store), store)
    if BLOCKS_NORMS in data:
        out["blocks"] = as_grid(patch_part(data[BLOCKS_NORMS].astype(np.float32), store), store)
    if BLOCKS_QKV_NORMS in data:  # (L, 3, gh, gw)
        out["blocks_qkv"] = as_grid(patch_part(data[BLOCKS_QKV_NORMS].astype(np.float32), store),
                                    store)
    return out


def _show(fig: Figure, ax: Any, grid: np.ndarray, title: str, unit: str) -> None:
    im = ax.imshow(grid, cmap="viridis", interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).set_label(unit, fontsize=8)


def _blank(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, wrap=True)
    ax.set_axis_off()


def plot_image(key: str, maps: list[dict | None], labels: list[str]) -> tuple[Figure, dict]:
    """Rows: stores; columns: input image | [CLS] attention | norm map."""
    fig = Figure(figsize=(11, 3.4 * len(maps)))
    axes = fig.subplots(len(maps), 3, squeeze=False)
    data: dict[str, Any] = {"key": key, "stores": []}
    for ax_row, m, label in zip(axes, maps, labels):
        if m is None:
            for ax in ax_row:
                _blank(ax, f"{label}:\nno ok row with key {key}")
            continue
        if "pixels" in m:
            ax_row[0].imshow(m["pixels"])
            ax_row[0].set_title("input image", fontsize=9)
            ax_row[0].set_ylabel(wrap(label), fontsize=9, fontweight="bold")
            ax_row[0].set_xticks([])
            ax_row[0].set_yticks([])
        else:
            _blank(ax_row[0], f"{wrap(label)}\n\n(input image not stored:\nno `pixels` array)")
        if "attention" in m:
            _show(fig, ax_row[1], m["attention"], "[CLS] attention, last block (mean of heads)",
                  "attention weight")
        else:
            _blank(ax_row[1], "no `attention` array: the model has\nno [CLS] token nor pooling "
                              "query\n(or the store predates it)")
        _show(fig, ax_row[2], m["norm"],
              f"feature map: token L2 norm ({int(m['outlier'].sum())} outliers)", "L2 norm")
        data["stores"].append({"label": label, "norm": m["norm"], "outlier": m["outlier"],
                               "attention": m.get("attention")})
    fig.suptitle(f"image {key}: input | [CLS] attention | feature (norm) map (study Figs. 1, 2, 5)")
    fig.tight_layout()
    return fig, data


def plot_qkv(key: str, maps: list[dict], labels: list[str]) -> tuple[Figure, dict]:
    """Rows: stores with `qkv_norms`; columns: q, k, v norms and the output norm (A.1)."""
    fig = Figure(figsize=(14, 3.2 * len(maps)))
    axes = fig.subplots(len(maps), 4, squeeze=False)
    data: dict[str, Any] = {"key": key, "stores": []}
    for ax_row, m, label in zip(axes, maps, labels):
        for ax, grid, name in zip(ax_row, [*m["qkv"], m["norm"]],
                                  ["query", "key", "value", "output (pre-LayerNorm)"]):
            _show(fig, ax, grid, f"{name} norm", "L2 norm")
        ax_row[0].set_ylabel(wrap(label), fontsize=9, fontweight="bold")
        data["stores"].append({"label": label, "q": m["qkv"][0], "k": m["qkv"][1],
                               "v": m["qkv"][2], "output": m["norm"]})
    fig.suptitle(f"image {key}: last-block q/k/v and output norm maps (study Fig. 6, A.1)")
    fig.tight_layout()
    return fig, data


def plot_blocks(key: str, m: dict, label: str) -> tuple[Figure, dict]:
    """One norm map per block for one store and image (A.2)."""
    blocks = m["blocks"]
    cols = min(6, len(blocks))
    rows = -(-len(blocks) // cols)
    fig = Figure(figsize=(2.3 * cols, 2.6 * rows + 1.0))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for i, ax in enumerate(axes):
        if i >= len(blocks):
            ax.set_axis_off()
            continue
        ax.imshow(blocks[i], cmap="viridis", interpolation="nearest")
        ax.set_title(f"block {i + 1} (max {blocks[i].max():.3g})", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{label}\nimage {key}: token-norm map after each block "
                 "(each panel its own colour scale; study Fig. 7, A.2)", fontsize=10)
    fig.tight_layout()
    return fig, {"key": key, "label": label, "blocks": blocks}


def plot_blocks_qkv(key: str, m: dict, label: str) -> tuple[Figure, dict]:
    """Rows q, k, v norms (and output norm when `blocks/norms` is stored);
    one column per block (A.2: a K outlier in blocks 19-20 of DINOv2-L)."""
    qkv = m["blocks_qkv"]
    rows = [("query", qkv[:, 0]), ("key", qkv[:, 1]), ("value", qkv[:, 2])]
    if "blocks" in m:
        rows.append(("output", m["blocks"]))
    depth = len(qkv)
    fig = Figure(figsize=(1.7 * depth + 1.0, 1.9 * len(rows) + 1.0))
    axes = fig.subplots(len(rows), depth, squeeze=False)
    for ax_row, (name, grids) in zip(axes, rows):
        for i, ax in enumerate(ax_row):
            ax.imshow(grids[i], cmap="viridis", interpolation="nearest")
            ax.set_title(f"{name} {i + 1} (max {grids[i].max():.3g})", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        ax_row[0].set_ylabel(f"{name} norm", fontsize=9)
    fig.suptitle(f"{label}\nimage {key}: q/k/v and output norm maps of every block "
                 "(each panel its own colour scale; study A.2)", fontsize=10)
    fig.tight_layout()
    return fig, {"key": key, "label": label, **{name: grids for name, grids in rows}}


def outlier_positions(store: Store, images: int, seed: int) -> np.ndarray:
    """Fraction of the sampled images in which each grid position holds an outlier."""
    _, _, mask = sample_outliers(store, [], images, seed)
    return as_grid(mask.mean(axis=0), store)


def plot_positions(grids: list[np.ndarray], labels: list[str]) -> tuple[Figure, dict]:
    fig = Figure(figsize=(min(4.6 * len(grids), 20), 4.2))
    axes = fig.subplots(1, len(grids), squeeze=False)[0]
    for ax, grid, label in zip(axes, grids, labels):
        _show(fig, ax, grid, wrap(label, 40), "fraction of images with an outlier here")
    fig.suptitle("Where outlier tokens fall over the patch grid")
    fig.tight_layout()
    return fig, {"stores": [{"label": lb, "fraction": g} for lb, g in zip(labels, grids)]}


def first_block(store: Store, images: int, seed: int) -> dict[str, Any]:
    """Per block, how the final outliers' norms compare with the other tokens'.

    The final outliers are the patch tokens above the store's threshold in
    `norms`. For each block, `fraction_high` is the share of them above that
    block's own 98th percentile of patch norms; the first block is the first
    with `fraction_high >= FIRST_BLOCK_FRACTION` (1-based, None if never).
    """
    rows, data, outlier = sample_outliers(store, [BLOCKS_NORMS], images, seed)
    blocks = patch_part(data[BLOCKS_NORMS].astype(np.float32), store)  # (n, L, P)
    per_block = np.moveaxis(blocks, 1, 0)  # (L, n, P)
    fraction, med_out, med_norm = [], [], []
    for values in per_block:
        cut = np.percentile(values, 98.0)
        fraction.append(float((values[outlier] > cut).mean()) if outlier.any() else 0.0)
        med_out.append(float(np.median(values[outlier])) if outlier.any() else float("nan"))
        med_norm.append(float(np.median(values[~outlier])))
    hits = [i + 1 for i, f in enumerate(fraction) if f >= FIRST_BLOCK_FRACTION]
    return {"fraction_high": fraction, "median_norm_outliers": med_out,
            "median_norm_normal": med_norm, "first_block": hits[0] if hits else None,
            "images": int(rows.size)}


def plot_first_block(results: list[dict], labels: list[str]) -> tuple[Figure, dict]:
    fig = Figure(figsize=(12, 4))
    ax, ax2 = fig.subplots(1, 2)
    for res, label, colour in zip(results, labels, COLOURS * 4):
        x = np.arange(1, len(res["fraction_high"]) + 1)
        ax.plot(x, res["median_norm_outliers"], color=colour, lw=2,
                label=wrap(f"final outliers · {label}", 60))
        ax.plot(x, res["median_norm_normal"], color=colour, ls=":",
                label=wrap(f"other patches · {label}", 60))
        ax2.plot(x, res["fraction_high"], color=colour, marker="o", ms=3, label=wrap(label, 60))
        if res["first_block"]:
            ax2.axvline(res["first_block"], color=colour, ls="--", lw=1)
    plain_log_y(ax)
    for a in (ax, ax2):
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("block")
    ax.set_ylabel("median token L2 norm (log scale)")
    ax.set_title("Norm of the final outlier tokens through the blocks")
    ax.legend(fontsize=7)
    ax2.axhline(FIRST_BLOCK_FRACTION, color="grey", lw=0.8)
    ax2.set_ylim(-0.02, 1.02)
    ax2.set_xlabel("block")
    ax2.set_ylabel("share of final outliers above the block's 98th pct.")
    ax2.set_title("First block with high-norm tokens (dashed)")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return fig, {"stores": [{"label": lb, **r} for lb, r in zip(labels, results)],
                 "rule": f"first block where >= {FIRST_BLOCK_FRACTION} of final outliers are "
                         "above that block's 98th percentile of patch norms"}


def _image_figures(opened: list[Store], labels: list[str], keys: list[str], out: Path,
                   advance: Callable[[int], None]) -> list:
    figures, cache = [], {}
    cells = GridWriter(out, opened, labels)
    for key in stepped(keys, advance):
        rows = [row_of(s, key, cache) for s in opened]
        maps = [None if r is None else image_maps(s, r) for s, r in zip(opened, rows)]
        for i, (store, row, m) in enumerate(zip(opened, rows, maps)):
            cells.add(i, key, None if row is None else int(store.take(LABEL, [row])[0]), m)
        figures.append(save_figure(*plot_image(key, maps, labels), out / f"maps_{slug(key)}.png"))
        with_qkv = [(m, lb) for m, lb in zip(maps, labels) if m is not None and "qkv" in m]
        if with_qkv:
            fig, data = plot_qkv(key, [m for m, _ in with_qkv], [lb for _, lb in with_qkv])
            figures.append(save_figure(fig, data, out / f"qkv_{slug(key)}.png"))
        if key == keys[0]:
            for i, (m, lb) in enumerate(zip(maps, labels)):
                if m is not None and "blocks" in m:
                    figures.append(save_figure(*plot_blocks(key, m, lb),
                                               out / f"blocks_{i}_{slug(key)}.png"))
                if m is not None and "blocks_qkv" in m:
                    figures.append(save_figure(*plot_blocks_qkv(key, m, lb),
                                               out / f"blocks_qkv_{i}_{slug(key)}.png"))
    cells.close()
    return figures


#: `--top` / `--key` / `--index` (the report takes them too)
MAPS_OPTIONS = (
    Option("top", help="Else draw the images with the highest max patch norm.", range=COUNT),
    Option("keys", help="Key of an image (repeatable).", multiple=True, flag_name="key"),
    Option("indices", help="Row index of an image to draw (repeatable).", multiple=True,
           type=int, range=COUNT_OR_ZERO, flag_name="index"),
    Option("block_images", help="Sampled ok images per store of the first-high-norm-block "
           "figure (0: all; stores with `blocks/norms`).", range=COUNT_OR_ZERO),
)


@register_analysis(
    "maps", order=3, title="Attention and feature maps (study Figs. 1, 2, 5, 6, 7)",
    help="Input | [CLS] attention | norm maps per image, q/k/v and per-block maps.",
    options=MAPS_OPTIONS,
    summary=lambda result, opts: f"wrote {len(result['figures'])} figures to {opts['out']}")
def run_maps(
    stores: Sequence[str | Store], *, out: str | Path, indices: Sequence[int] = (),
    keys: Sequence[str] = (), top: int = TOP_K, images: int = 5000,
    block_images: int = BLOCK_IMAGES, seed: int = 42, allow_partial: bool = False,
    block: int | None = None,
) -> Result:
    """Map figures of chosen images, the outlier-position heat map and the first high-norm block."""
    out = Path(out)
    opened = open_stores(stores, allow_partial=allow_partial, block=block)
    labels = store_labels(opened)
    check_keys(opened, keys)
    chosen = choose_keys(opened[0], indices=indices, keys=keys, top=top)
    stats: dict[str, Any] = {lb: {"images_drawn": chosen} for lb in labels}
    with_blocks = [(s, lb) for s, lb in zip(opened, labels) if BLOCKS_NORMS in s]
    # each image's figures, each store's outlier positions, their figure, each store's
    # first block and its figure
    steps = len(chosen) + len(opened) + 1 + (len(with_blocks) + 1 if with_blocks else 0)
    with analysis_bar("maps", steps) as advance:
        figures = _image_figures(opened, labels, chosen, out, advance)
        grids = [outlier_positions(s, images, seed) for s in stepped(opened, advance)]
        figures.append(save_figure(*plot_positions(grids, labels), out / "outlier_positions.png"))
        advance(1)
        if with_blocks:
            results = [first_block(s, block_images, seed) for s, _ in stepped(with_blocks, advance)]
            figures.append(save_figure(*plot_first_block(results, [lb for _, lb in with_blocks]),
                                       out / "first_block.png"))
            advance(1)
            for (_, lb), res in zip(with_blocks, results):
                stats[lb]["first_block_images"] = res["images"]
                stats[lb]["first_high_norm_block"] = res["first_block"]
    notes = [f"{lb}: input image not stored (no `pixels`)" for s, lb in zip(opened, labels)
             if PIXELS not in s]
    return {"figures": figures, "stats": stats, "notes": notes}
