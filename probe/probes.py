"""The four probes of the study, registered by name.

Each takes a `ProbeContext` (stores opened, split made, options resolved) and
returns the probe-specific part of the result: counts, curves, metrics.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from vitreg.cache import Store
from vitreg.cache.names import LABEL, PIXELS, POOLED_CLS
from vitreg.core.numbers import COUNT, COUNT_OR_ZERO, NON_NEGATIVE, POSITIVE

from .context import ProbeContext
from .coverage import class_coverage, with_sample_sizes
from .fitting import fit, fit_by_category, fit_summary, make_streams, selection_parts
from .gather import (
    POOLED,
    ClassifyGather,
    PixelPatchGather,
    PooledGather,
    TargetGather,
    TokenGather,
    patch_geometry,
    pooled_columns,
    require_pixels,
)
from .linear_heads import Head
from .options import MOMENTUM, SKLEARN_OPTIONS, TOKEN_OPTIONS, training_options
from .registry import Option, ProbeError, register_probe
from .select import (
    Items,
    select_images_with_outliers,
    select_labelled_images,
    select_tokens,
    token_source,
)
from .tasks import ClassifyTask, PositionTask, ReconstructTask

log = logging.getLogger("vitreg.probe")


def _normals(value: Any) -> int | None:
    if value in (None, "", "match"):
        return None
    n = int(value)
    if n < 0:
        raise ProbeError("--normals must be >= 0")
    return n


def _select_token_items(ctx: ProbeContext) -> dict[str, Items]:
    normals = _normals(ctx.options["normals"])
    seed = int(ctx.options["seed"])
    items = {}
    for name, part in (("train", ctx.train), ("val", ctx.val)):
        items[name] = select_tokens(part, normals=normals, seed=seed)
        c = items[name].counts
        if c["normal"] < c["normal_wanted"]:
            ctx.notes.append(f"{name}: only {c['normal']} normal tokens for "
                             f"{c['normal_wanted']} wanted")
        if c["outlier"] == 0:
            ctx.notes.append(f"{name}: no outlier token; outlier metrics are absent")
    return items


def _token_counts(items: dict[str, Items]) -> dict[str, Any]:
    return {name: it.counts for name, it in items.items()}


# -- position ----------------------------------------------------------------------
@register_probe(
    "position",
    summary="which of the P grid positions a patch token sits at (top-1, L2 in patches)",
    options=(
        *training_options("top-1", "Adam", 0.0),
        Option("mse_weight", 0.5, "loss = CE + this x MSE of the softmax-expected (row, col), "
               "in patch units (paper: 0.5)", range=NON_NEGATIVE),
        *TOKEN_OPTIONS, *SKLEARN_OPTIONS,
    ),
)
def position(ctx: ProbeContext) -> dict[str, Any]:
    geometry = ctx.train.store.geometry
    items = _select_token_items(ctx)
    cfg = ctx.train_config(optimizer="adam", weight_decay=float(ctx.options["weight_decay"]),
                           patience=int(ctx.options["patience"]))
    fitted = fit_by_category(
        ctx, items, TokenGather(token_source(ctx.train.store), "patch"),
        lambda: PositionTask(tuple(geometry.grid), float(ctx.options["mse_weight"])),
        Head("position", geometry.patches), cfg, ("top1", "distance"))
    if ctx.options["backend"] == "sklearn":
        ctx.notes.append("sklearn backend: multinomial LogisticRegression, cross-entropy only "
                         "(no MSE term)")
    return {
        "counts": _token_counts(items),
        **fitted,
        "chance_top1": 1.0 / geometry.patches,
        "units": {"top1": "fraction of tokens whose argmax position is the true one",
                  "distance": "mean Euclidean distance between the argmax and the true "
                              "(row, col), in patches"},
    }


# -- reconstruct ---------------------------------------------------------------------
@register_probe(
    "reconstruct",
    summary="the token's P x P x 3 pixel patch of the model input (MSE, L2 error)",
    options=(
        *training_options("MSE", "AdamW", 0.01),
        *TOKEN_OPTIONS,
        Option("targets", "auto", "where the pixel patches come from: the store's `pixels` "
               "array, or its images re-decoded from the store's recorded shards with its "
               "recorded preprocessing (auto: pixels when both stores hold them)",
               choices=("auto", "pixels", "shards")),
        Option("shards", None, "--targets shards: where STORE's shards are now, when not where "
               "it records them (a brace pattern such as /data/train-{000..063}.tar, or the "
               "folder that holds them under their recorded names)", type=str),
        Option("val_shards", None, "the same as --shards, for the --val store", type=str),
        Option("trust_recorded_shards", False, "--targets shards without --shards: reopen the "
               "shard URLs the stores record (local files and http(s)/s3 URLs only; a store "
               "is someone's data, so this needs your say-so)"),
        Option("decode_workers", 0, "--targets shards: processes that decode images "
               "(0: the CPUs, at most 8)", range=COUNT_OR_ZERO),
        *SKLEARN_OPTIONS,
    ),
)
def reconstruct(ctx: ProbeContext) -> dict[str, Any]:
    p, grid = patch_geometry(ctx.train.store)
    items = _select_token_items(ctx)
    source = token_source(ctx.train.store)
    mode = ctx.options["targets"]
    if mode == "auto":
        mode = "pixels" if all(PIXELS in part.store for part in (ctx.train, ctx.val)) \
            else "shards"
    if mode == "pixels":
        for part in (ctx.train, ctx.val):
            require_pixels(part.store)
        gather = PixelPatchGather(source, p, grid)
    else:
        gather = TargetGather(source, redecoded_targets(ctx, items))
    cfg = ctx.train_config(optimizer="adamw", weight_decay=float(ctx.options["weight_decay"]),
                           patience=int(ctx.options["patience"]))
    fitted = fit_by_category(ctx, items, gather, ReconstructTask,
                             Head("reconstruct", p * p * 3), cfg, ("mse", "l2"))
    return {
        "counts": _token_counts(items),
        **fitted,
        "patch_pixels": [p, p, 3],
        "units": {
            "mse": "mean over the P*P*3 values of the squared error, pixel values on the 0-255 "
                   "scale of the model input before normalisation (intensity^2)",
            "l2": "mean over tokens of the L2 norm of the per-patch error vector (P*P*3 values), "
                  "0-255 intensity units: the paper's 'L2 error'",
        },
        "targets": mode,
    }


def redecoded_targets(ctx: ProbeContext, items: dict[str, Items]) -> np.ndarray:
    """The train and val items' pixel patches, re-decoded from their stores' shards, as
    one array; each item gets the field `target`, its row in it."""
    from .redecode import decode_targets

    offset, parts = 0, []
    for name in ("train", "val"):
        n = len(items[name])
        items[name].fields["target"] = np.arange(offset, offset + n)
        offset += n
    if ctx.val.store is ctx.train.store:  # a split of one store: one pass over its shards
        jobs = [(("train", "val"), ctx.train, ctx.options["shards"])]
    else:
        jobs = [(("train",), ctx.train, ctx.options["shards"]),
                (("val",), ctx.val, ctx.options["val_shards"])]
    for names, part, shards in jobs:
        rows = np.concatenate([items[n].fields["row"] for n in names])
        patch = np.concatenate([items[n].fields["patch"] for n in names])
        t0 = time.perf_counter()
        parts.append(decode_targets(part.store, rows, patch, shards=shards,
                                    trust_recorded=bool(ctx.options["trust_recorded_shards"]),
                                    workers=int(ctx.options["decode_workers"])))
        ctx.data.setdefault("redecoded", []).append(
            {"store": part.store.url, "parts": list(names), "tokens": int(rows.size),
             "images": int(np.unique(rows).size), "seconds": round(time.perf_counter() - t0, 3)})
        log.info("re-decoded %d pixel patches of %d images from %s's shards in %.1f s",
                 rows.size, np.unique(rows).size, part.store.url, time.perf_counter() - t0)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


# -- classify --------------------------------------------------------------------------
@register_probe(
    "classify",
    summary="image class from [CLS], one random normal and one random outlier token (top-1)",
    options=(
        *training_options("accuracy", "Adam", 0.0),
        Option("max_images", 200_000, "most training images with an outlier (paper: 200,000)",
               range=COUNT),
        Option("num_classes", None, "classes (default: largest label + 1)", type=int,
               range=COUNT),
        *SKLEARN_OPTIONS,
    ),
)
def classify(ctx: ProbeContext) -> dict[str, Any]:
    store = ctx.train.store
    source = token_source(store)
    geometry = store.geometry
    has_cls = geometry.has_cls
    cls_source = cls_array(store)
    if cls_source == POOLED_CLS:
        ctx.notes.append("sampled store of schema < 1.4 (no sampled/prefix): [CLS] comes from "
                         "pooled/cls (after the final LayerNorm), the patch tokens from before "
                         "it; re-extract it to compare [CLS] with a full store's")
    items = {
        "train": select_images_with_outliers(
            ctx.train, seed=int(ctx.options["seed"]), max_images=ctx.options["max_images"],
            has_cls_token=has_cls),
        "val": select_images_with_outliers(
            ctx.val, seed=int(ctx.options["seed"]), max_images=None, has_cls_token=has_cls),
    }
    num_classes = _num_classes(ctx, items)
    cfg = ctx.train_config(optimizer="adam", weight_decay=float(ctx.options["weight_decay"]),
                           patience=int(ctx.options["patience"]))
    streams = make_streams(ctx, selection_parts(ctx, items, cfg, False),
                           ClassifyGather(source, cls_source))
    d = geometry.dim
    heads = [Head("normal", num_classes, np.arange(d, 2 * d)),
             Head("outlier", num_classes, np.arange(2 * d, 3 * d))]
    if has_cls:
        heads.insert(0, Head("cls", num_classes, np.arange(0, d)))
    else:
        ctx.notes.append("the model has no [CLS] token")
    result = fit(ctx, streams, ClassifyTask(num_classes), heads, cfg)
    coverage = class_coverage(items["train"].fields[LABEL], items["val"].fields[LABEL])
    return {
        "counts": {name: it.counts for name, it in items.items()},
        "images_used": {name: len(it) for name, it in items.items()},
        "num_classes": num_classes,
        "cls_source": cls_source if has_cls else None,
        "metrics": with_sample_sizes({h.name: _top(result.metrics[h.name]) for h in heads},
                                     coverage, ctx.notes),
        "class_coverage": coverage,
        "units": {"top1": "fraction of validation images classified correctly",
                  "count": "validation images", "classes_seen": "classes in training"},
        **fit_summary(result),
    }


def cls_array(store: Store) -> str:
    """Where [CLS] before the final norm is read (`Store.cls_source`: the cache
    knows which schema versions keep it where)."""
    return store.cls_source()


def _top(metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    return {k: v for k, v in metrics["all"].items()}


#: Without --num-classes, labels up to this count are taken as they are (ImageNet-1k).
SPARSE_LABELS = 1000


def _num_classes(ctx: ProbeContext, items: dict[str, Items]) -> int:
    largest = max(int(it.fields[LABEL].max()) for it in items.values())
    given = ctx.options.get("num_classes")
    if given is None:
        distinct = len(np.unique(np.concatenate([it.fields[LABEL] for it in items.values()])))
        if largest + 1 > max(SPARSE_LABELS, 10 * distinct):
            raise ProbeError(
                f"the largest label is {largest} but only {distinct} distinct labels are used: "
                f"a head of {largest + 1} classes is almost surely a labelling mistake; fix the "
                "shards' .cls, or pass --num-classes N if that is the class count")
        return largest + 1
    if int(given) <= largest:
        raise ProbeError(f"--num-classes {given} but a label is {largest}")
    return int(given)


# -- linear (Claim 5) --------------------------------------------------------------------
PAPER_FEATURES = ("cls+patch_mean", "cls+patch_mean+registers", "patch_mean+registers")


@register_probe(
    "linear",
    summary="image class from post-LayerNorm pooled features (Claim 5), or an official head",
    options=(
        Option("features", ",".join(PAPER_FEATURES), "comma-separated '+'-joined combinations "
               "of cls, patch_mean, registers (default: the paper's three)"),
        Option("epochs", 20, "epochs (paper: 20, no early stopping)", range=COUNT),
        Option("lr", 0.01, "SGD learning rate, cosine schedule (not given by the paper)",
               range=POSITIVE),
        Option("momentum", 0.9, "SGD momentum", range=MOMENTUM),
        Option("weight_decay", 0.0, "SGD weight decay", range=NON_NEGATIVE),
        Option("num_classes", None, "classes (default: largest label + 1)", type=int,
               range=COUNT),
        Option("head", None, "evaluate this official DINOv2 linear head (torch.load with "
               "weights_only=True, or .safetensors) instead of training", type=str),
        *SKLEARN_OPTIONS,
    ),
)
def linear(ctx: ProbeContext) -> dict[str, Any]:
    from .heads import evaluate_head

    for part in (ctx.train, ctx.val):
        missing = [a for a in POOLED.values() if a not in part.store]
        if missing:
            raise ProbeError(f"store {part.store.url} lacks pooled feature array(s) {missing}")
    if ctx.options.get("head"):
        return evaluate_head(ctx, ctx.options["head"])
    combos = parse_features(ctx)
    names = tuple(n for n in POOLED if any(n in c for c in combos))
    g = ctx.train.store.geometry
    columns = pooled_columns(names, g.dim, g.registers)
    items = {"train": select_labelled_images(ctx.train), "val": select_labelled_images(ctx.val)}
    num_classes = _num_classes(ctx, items)
    cfg = ctx.train_config(optimizer="sgd", weight_decay=float(ctx.options["weight_decay"]),
                           patience=None, momentum=float(ctx.options["momentum"]))
    streams = make_streams(ctx, selection_parts(ctx, items, cfg, False), PooledGather(names))
    heads = [Head("+".join(c), num_classes, np.concatenate([columns[n] for n in c]))
             for c in combos]
    result = fit(ctx, streams, ClassifyTask(num_classes), heads, cfg)
    coverage = class_coverage(items["train"].fields[LABEL], items["val"].fields[LABEL])
    return {
        "counts": {name: it.counts for name, it in items.items()},
        "num_classes": num_classes,
        "features": {h.name: len(h.columns) for h in heads},
        "metrics": with_sample_sizes({h.name: _top(result.metrics[h.name]) for h in heads},
                                     coverage, ctx.notes),
        "class_coverage": coverage,
        "units": {"top1": "fraction of validation images classified correctly",
                  "count": "validation images", "classes_seen": "classes in training"},
        **fit_summary(result),
    }


def parse_features(ctx: ProbeContext) -> list[tuple[str, ...]]:
    """'a+b,c' -> [('a', 'b'), ('c',)], each in POOLED's order; registers need R > 0."""
    text = ctx.options["features"]
    default = text == ",".join(PAPER_FEATURES)
    registers = ctx.train.store.geometry.registers
    combos: list[tuple[str, ...]] = []
    for spec in (s.strip() for s in str(text).split(",")):
        if not spec:
            continue
        names = [n.strip() for n in spec.split("+")]
        unknown = [n for n in names if n not in POOLED]
        if unknown or len(set(names)) != len(names):
            raise ProbeError(f"--features {spec!r}: join distinct names of {list(POOLED)} with '+'")
        combo = tuple(n for n in POOLED if n in names)
        if "registers" in combo and registers == 0:
            if default:
                ctx.notes.append(f"{spec}: skipped, the model has no registers")
                continue
            raise ProbeError(f"--features {spec!r}: the model of {ctx.train.store.url} has no "
                             "registers (R = 0)")
        if combo not in combos:
            combos.append(combo)
    if not combos:
        raise ProbeError("--features names no combination to train")
    return combos
