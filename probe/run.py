"""`run_probe`: open the stores, split by image, run one registered probe, and
write the results JSON (configuration, seeds, provenance, counts, curves,
metrics, elapsed time)."""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitreg.cache import SCHEMA_VERSION, Store, open_store
from vitreg.cache.attrs import SAME_MODEL_KEYS
from vitreg.cache.attrs import provenance as store_provenance
from vitreg.cache.names import KEY
from vitreg.core.device import resolve_device
from vitreg.core.files import write_json as core_write_json
from vitreg.core.options import resolve
from vitreg.core.paths import check_not_inside
from vitreg.core.scrub import redact
from vitreg.core.version import __version__

from . import probes as _probes  # noqa: F401 - registers the probes
from .context import ProbeContext
from .progress import probe_progress
from .registry import ProbeError, ProbeSpec, get_probe
from .select import Part, split_rows
from .setup import result_setup


def run_probe(
    kind: str, store: str, *, out: str | None = None, val: str | None = None,
    progress: bool = False, **options: Any
) -> dict[str, Any]:
    """Run probe `kind` on `store` (validated on `val`, or a split of `store`).

    `options` are the probe's options by their Python names (`vitreg probe
    KIND --help`, or `PROBES[kind].defaults()`); missing ones take the paper's
    defaults. Returns the result dict, also written to `out` when given.
    `progress`: a bar per fit on stderr (epochs x heads x learning rates).
    """
    spec = get_probe(kind)
    opts = resolve_options(spec, options)
    if out is not None:
        check_out_file(out)
        check_not_inside(out, [store, val, opts["threshold_from"], opts.get("head")])
    started = _dt.datetime.now(_dt.UTC)
    t0 = time.perf_counter()
    train_store, val_store = open_pair(store, val, opts)
    device = resolve_device(opts["device"], error=ProbeError)
    train, val_part, split, threshold = make_parts(train_store, val_store, opts)
    ctx = ProbeContext(kind=kind, options=opts, train=train, val=val_part, device=device)
    ctx.notes += [f"{part.store.url} is incomplete: only its {part.store.counts()['ok']} ok "
                  "rows so far are used (--allow-partial)"
                  for part in (train, val_part) if not part.store.complete]
    with probe_progress(kind, enabled=progress):
        body = spec.run(ctx)
    config = {"store": redact(store), "val": None if val is None else redact(val),
              "out": None if out is None else str(out), **opts}
    result = result_record(spec, ctx, body, stores=(train_store, val_store), config=config,
                           started=started, split=split, threshold=threshold)
    result["elapsed_s"] = round(time.perf_counter() - t0, 3)
    result = _plain(result)
    if out is not None:
        write_json(out, result)
    return result


def result_record(spec: ProbeSpec, ctx: ProbeContext, body: dict[str, Any], *,
                  stores: tuple[Store, Store | None], config: dict[str, Any],
                  started: _dt.datetime, split: dict[str, Any],
                  threshold: dict[str, Any]) -> dict[str, Any]:
    """The results JSON of a run (before `elapsed_s`): what the probe returned
    (`body`, emptied) with the run's configuration, provenance and setup."""
    train_store, val_store = stores
    opts = ctx.options
    result = {
        # The shape the analysis report reads: keep these keys as they are.
        "probe": ctx.kind,
        "store": store_info(train_store),
        "val_store": None if val_store is None else store_info(val_store),
        "config": config,
        "counts": body.pop("counts"),
        "metrics": body.pop("metrics"),
        "curves": body.pop("curves"),
        "elapsed_s": None,
        "backend": opts["backend"],
        # Everything else.
        "summary": spec.summary,
        "vitreg_version": __version__,
        "schema_version_read": SCHEMA_VERSION,
        "started_at": started.isoformat(timespec="seconds"),
        "seeds": {"split": opts["seed"], "selection": opts["seed"], "torch_init": opts["seed"],
                  "shuffle": f"numpy default_rng([{opts['seed']}, epoch])"},
        "provenance": {"train": provenance(ctx.train), "val": provenance(ctx.val)},
        "split": split,
        "outlier_threshold": threshold,
        "data": ctx.data,
        "environment": environment(ctx.device),
        **body,
        "notes": ctx.notes,
    }
    result["setup"] = result_setup(ctx.kind, train_store, val_store, opts, result["counts"],
                                   ctx.data.get("selection"))
    return result


def open_pair(store: str, val: str | None, opts: dict[str, Any]) -> tuple[Store, Store | None]:
    """The training store and the --val store, checked to be of one model and
    (unless allowed) to share no image."""
    train_store = open_store(store, allow_partial=opts["allow_partial"]).at_block(opts["block"])
    val_store = open_store(val, allow_partial=opts["allow_partial"]).at_block(opts["block"]) \
        if val else None
    if val_store is not None:
        check_same_model(train_store, val_store)
        if not opts["allow_val_overlap"]:
            check_no_overlap(train_store, val_store)
    return train_store, val_store


def make_parts(train_store: Store, val_store: Store | None,
               opts: dict[str, Any]) -> tuple[Part, Part, dict[str, Any], dict[str, Any]]:
    """(train, val, split, threshold): the rows of each part under one model threshold."""
    train_rows, val_rows, split = split_rows(
        train_store, val_store, val_fraction=float(opts["val_fraction"]), seed=int(opts["seed"])
    )
    percentile = float(opts["percentile"])
    threshold = model_threshold(train_store, opts["threshold_from"], percentile,
                                allow_partial=opts["allow_partial"])
    train = Part("train", train_store, train_rows, percentile, threshold["value"])
    val_part = (
        Part("val", val_store, val_store.ok_rows(), percentile, threshold["value"])
        if val_store is not None
        else Part("val", train_store, val_rows, percentile, threshold["value"])
    )
    return train, val_part, split, threshold


def model_threshold(train: Store, source: str | None, percentile: float, *,
                    allow_partial: bool) -> dict[str, Any]:
    """The one outlier threshold of a run: `train`'s, or that of the store `source`.

    The study computes it "on a per model basis": a train and a val store of
    one model are split by one value, never each by its own.
    """
    store = train
    if source:
        block = None if train.block is None else train.block + 1  # the train store's block
        store = open_store(source, allow_partial=allow_partial).at_block(block)
        check_same_model(train, store, flag="--threshold-from")
    return {"percentile": percentile, "value": store.threshold(percentile), "from": store.url}


def resolve_options(spec: ProbeSpec, given: dict[str, Any]) -> dict[str, Any]:
    """The probe's defaults overlaid with `given`, each checked and cast to its type."""
    return resolve(spec.all_options, given, what=f"probe {spec.name!r}", error=ProbeError)


def check_out_file(out: str) -> None:
    """`--out` can take the results file: checked before any training."""
    target = Path(out)
    if target.is_dir():
        raise ProbeError(f"--out {out} is a folder; give a file name such as "
                         f"{target / 'probe.json'}")
    parent = next((p for p in target.parents if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ProbeError(f"--out {out}: cannot write in {parent}; choose a writable path")


def check_no_overlap(train: Store, val: Store) -> None:
    """Refuse a --val store that shares images (keys of ok rows) with the training store."""
    keys = [set(np.asarray(s.array(KEY)[:], dtype=object)[s.ok_rows()].tolist())
            for s in (train, val)]
    shared = keys[0] & keys[1]
    if shared:
        examples = ", ".join(sorted(map(str, shared))[:3])
        raise ProbeError(
            f"--val store {val.url} shares {len(shared)} of its {len(keys[1])} images with the "
            f"training store {train.url} (e.g. {examples}): validation would measure the "
            "training images; pass a store of other images, or --allow-val-overlap if intended")


def check_same_model(a: Store, b: Store, *, flag: str = "--val") -> None:
    """Refuse a --val (or `flag`) store written by another model, weights or geometry."""
    ma, mb = a.meta, b.meta
    diff = [k for k in SAME_MODEL_KEYS if ma.get(k) != mb.get(k)]
    if diff:
        pairs = ", ".join(f"{k}: {ma.get(k)!r} vs {mb.get(k)!r}" for k in diff)
        raise ProbeError(f"{flag} store {b.url} does not come from the same model as {a.url} "
                         f"({pairs}); train and validate on stores of one model")


def store_info(store: Store) -> dict[str, Any]:
    """The five provenance fields every consumer of a result reads."""
    return store_provenance(store.url, store.meta)


def provenance(part: Part) -> dict[str, Any]:
    """Where a part's tokens come from: the store's attributes, rows and threshold."""
    store = part.store
    g = store.geometry
    return {
        **store_provenance(store.url, store.meta),
        "complete": store.complete,
        "rows": {"total": store.n_rows, **store.counts()},
        "images_used": part.images,
        "chunk_rows": store.chunk_rows,
        "geometry": {"grid": list(g.grid), "dim": g.dim, "registers": g.registers,
                     "prefix": g.prefix, "patches": g.patches, "img_size": g.img_size},
        "outlier_threshold": None if part.threshold is None else
        {"percentile": part.percentile, "value": part.threshold},
        "attrs": store.meta,
    }


def environment(device: torch.device) -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "python": platform.python_version(), "torch": torch.__version__,
        "numpy": np.__version__, "zarr": version("zarr"), "sklearn": version("scikit-learn"),
        "device": str(device), "torch_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars and arrays to Python, NaN and inf to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (torch.device, Path)):
        return str(value)
    return value


def write_json(path: str, result: dict[str, Any]) -> None:
    """Write atomically (a temporary file, then `os.replace`); NaN is refused."""
    core_write_json(path, result, allow_nan=False)
