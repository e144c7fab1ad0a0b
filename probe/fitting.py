"""How a probe fits its heads: the item sets its protocol needs, streams over
them, the backend that trains, and one fit per token category."""

from __future__ import annotations

import logging
from typing import Any

from .backend_sklearn import fit_sklearn
from .context import ProbeContext, parse_grid
from .fit_config import FitResult, TrainConfig
from .linear_heads import Head
from .metrics import CATEGORIES
from .protocol import fit_protocol, needs_selection
from .registry import ProbeError
from .select import Items, split_items_by_image
from .stream import TokenStream
from .tasks import Task

log = logging.getLogger("vitreg.probe")


def selection_parts(ctx: ProbeContext, items: dict[str, Items], cfg: TrainConfig,
                    regression: bool) -> dict[str, Items]:
    """The item sets training reads under the run's protocol: `train` and `val`, or,
    when an epoch or a grid value is to be chosen, `fit` and `select` (the training
    items split by image) in place of `train` (beside it under `--protocol study`)."""
    o = ctx.options
    stops = o["backend"] == "torch" and cfg.patience is not None
    if o["backend"] == "sklearn":
        name = "sklearn_alpha" if regression else "sklearn_c"
        grid = len(parse_grid(o[name], name))
        select = grid > 1
    else:
        grid = len(cfg.grid)
        select = needs_selection(cfg.grid, cfg.patience, o["protocol"])
    ctx.data["selection"] = selection_record(ctx, select, grid, stops)
    if not select:
        return items
    fit_items, held = split_items_by_image(items["train"], float(o["select_fraction"]),
                                           int(o["seed"]))
    keep_train = o["protocol"] == "study" and o["backend"] == "torch"
    return {**({"train": items["train"]} if keep_train else {}), "fit": fit_items,
            "select": held, "val": items["val"]}


def selection_record(ctx: ProbeContext, select: bool, grid: int, stops: bool) -> dict[str, Any]:
    """Which split each choice is made on, for the result (and the report's setup column).

    `grid`: values of the grid searched (learning rates, or C / alpha with sklearn);
    `stops`: whether training stops early (torch with a patience).
    """
    o = ctx.options
    torch_ = o["backend"] == "torch"
    study = o["protocol"] == "study" and torch_
    held = f"held-out {float(o['select_fraction']):g} of the training images"
    if not select and not stops:
        protocol = "no selection"
    else:
        protocol = o["protocol"] if torch_ else "heldout (sklearn)"
    return {
        "protocol": protocol,
        "trained_on": "training images" + (f" less the {held}" if select and not study else ""),
        "grid_chosen_on": held if grid > 1 else None,
        "early_stopping_on": None if not stops else ("reported split" if study else held),
        "reported_on": "val",
    }


def make_streams(ctx: ProbeContext, items: dict[str, Items], gather) -> dict[str, TokenStream]:
    """Streams over every item set, in memory or not per --in-memory."""
    parts = {"train": ctx.train, "fit": ctx.train, "select": ctx.train, "val": ctx.val}
    streams = {name: TokenStream(parts[name].store, it, gather, in_memory=False)
               for name, it in items.items()}
    need = sum(s.nbytes() for s in streams.values())
    budget = int(ctx.options["memory_budget"]) * 2**20
    mode = ctx.options["in_memory"]
    if ctx.options["backend"] == "sklearn" and need > budget:
        raise ProbeError(
            f"--backend sklearn holds every selected item in memory ({need / 2**20:.0f} MiB), "
            f"more than --memory-budget {ctx.options['memory_budget']} MiB; use the torch "
            "backend (it streams) or raise --memory-budget"
        )
    in_memory = mode == "yes" or (mode == "auto" and need <= budget) or \
        ctx.options["backend"] == "sklearn"
    for s in streams.values():
        s.in_memory = in_memory
    ctx.data.update(selected_mib=round(need / 2**20, 3), in_memory=in_memory)
    log.info("%s items, %.1f MiB, %s", {k: len(v) for k, v in streams.items()},
             need / 2**20, "kept in memory" if in_memory else "streamed")
    return streams


def fit(ctx: ProbeContext, streams: dict[str, TokenStream], task: Task, heads: list[Head],
        cfg: TrainConfig) -> FitResult:
    if any(len(s) == 0 for s in streams.values()):
        raise ProbeError("nothing to train, select or validate on after selection: "
                         f"{ {k: len(v) for k, v in streams.items()} }")
    if ctx.options["backend"] == "sklearn":
        return fit_sklearn(
            streams.get("fit", streams.get("train")), streams["val"], task, heads, cfg,
            alpha=parse_grid(ctx.options["sklearn_alpha"], "sklearn_alpha"),
            C=parse_grid(ctx.options["sklearn_c"], "sklearn_c"),
            max_iter=int(ctx.options["sklearn_max_iter"]), select=streams.get("select"),
        )
    return fit_protocol(streams, task, heads, cfg, ctx.options["protocol"])


def fit_summary(result: FitResult) -> dict[str, Any]:
    return {"curves": result.curves, "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run, "stopped_early": result.stopped_early,
            "passes_per_epoch": result.passes_per_epoch, "chosen": result.chosen,
            "selection_metrics": result.selection_metrics}


def of_category(items: Items, code: int) -> Items:
    """The items of one token category (NORMAL or OUTLIER), still sorted by row."""
    keep = items.fields["category"] == code
    return Items({k: v[keep] for k, v in items.fields.items()}, counts=items.counts)


def fit_by_category(
    ctx: ProbeContext, items: dict[str, Items], gather, make_task, head: Head, cfg: TrainConfig,
    keys: tuple[str, ...],
) -> dict[str, Any]:
    """One head per token category: normal and outlier tokens each get their own
    standardisation, learning-rate grid, early stopping and validation.

    A head fitted to the mix would be dominated by the outliers (an order of
    magnitude larger in norm) and would show neither category's content.
    Returns the probe's `metrics` (None for a category absent from a part),
    and per category its curves and fit summary.
    """
    items = selection_parts(ctx, items, cfg, make_task().regression)
    streams = make_streams(ctx, items, gather)
    metrics: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    fits: dict[str, Any] = {}
    for name, code in CATEGORIES.items():
        sub = {part: of_category(it, code) for part, it in items.items()}
        empty = [part for part, it in sub.items() if len(it) == 0]
        if empty:
            metrics[name] = None
            if len(sub.get("train", sub.get("fit"))) and len(sub["val"]):
                ctx.notes.append(f"{name} tokens: none in the {', '.join(empty)} part; no "
                                 "metrics (a larger --select-fraction or store may help)")
            continue
        sub_streams = {part: TokenStream(streams[part].source, sub[part], gather,
                                         in_memory=streams[part].in_memory) for part in sub}
        log.info("%s tokens: %s", name, {k: len(v) for k, v in sub.items()})
        result = fit(ctx, sub_streams, make_task(), [head], cfg)
        m = result.metrics[head.name]["all"]
        metrics[name] = {k: m[k] for k in (*keys, "count") if k in m}
        fits[name] = fit_summary(result)
        curves[name] = fits[name].pop("curves")
    return {"metrics": metrics, "curves": curves, "fits": fits,
            "epochs_run": {k: f["epochs_run"] for k, f in fits.items()}}

