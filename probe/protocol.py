"""Selection protocols: on which split the epoch and the learning rate are
chosen and on which the chosen heads are reported (torch backend)."""

from __future__ import annotations

from dataclasses import replace

from .backend_torch import evaluate, fit_torch
from .fit_config import FitResult, TrainConfig
from .linear_heads import Head
from .stream import TokenStream
from .tasks import Task

#: `heldout`: every choice (epoch, learning rate, regularisation) is made on a held-out
#: part of the training store, and the reported split is seen once, by the chosen heads.
#: `study`: the study's protocol, early stopping on the reported split's metric
#: (patience 3); a learning-rate grid, which the study does not have, is still chosen on
#: the held-out part, then each head is trained again at its value under the study's rule.
PROTOCOLS = ("heldout", "study")


def needs_selection(grid: tuple[float, ...], patience: int | None, protocol: str) -> bool:
    """Whether a held-out part of the training store is needed: a grid to choose from,
    or (under `heldout`) an early stopping to decide."""
    return len(grid) > 1 or (protocol == "heldout" and patience is not None)


def fit_protocol(streams: dict[str, TokenStream], task: Task, heads: list[Head],
                 cfg: TrainConfig, protocol: str) -> FitResult:
    """Train every head under `protocol`; its `metrics` are on `streams['val']`.

    `streams` holds `train` (every training item) and `val` (the reported split), and,
    when `needs_selection`, `fit` and `select` (the training items split by image).
    """
    if not needs_selection(cfg.grid, cfg.patience, protocol):
        return fit_torch(streams["train"], streams["val"], task, heads, cfg)
    chosen = fit_torch(streams["fit"], streams["select"], task, heads, cfg)
    if protocol == "heldout":
        return report_on(chosen, streams["val"], task, heads, cfg)
    return refit_on_train(chosen, streams, task, heads, cfg)


def report_on(result: FitResult, val: TokenStream, task: Task, heads: list[Head],
              cfg: TrainConfig) -> FitResult:
    """The chosen copy of every head, at its chosen epoch, scored once on `val`."""
    scores = evaluate(result.model, val, task, cfg, [result.picked[h.name] for h in heads])
    for head in heads:
        result.selection_metrics[head.name] = result.metrics[head.name]
        result.metrics[head.name] = scores[result.picked[head.name]]
    return result


def refit_on_train(chosen: FitResult, streams: dict[str, TokenStream], task: Task,
                   heads: list[Head], cfg: TrainConfig) -> FitResult:
    """The study's protocol after a grid: each head at the learning rate chosen on the
    held-out part, trained on every training item, early stopping on `val`."""
    by_lr: dict[float, list[Head]] = {}
    for head in heads:
        by_lr.setdefault(chosen.chosen[head.name]["lr"], []).append(head)
    fits = [fit_torch(streams["train"], streams["val"], task, group, replace(cfg, lr=lr, lrs=(lr,)))
            for lr, group in by_lr.items()]
    result = fits[0]
    for other in fits[1:]:  # heads at other learning rates: one model each
        result.curves += other.curves
        result.epochs_run = max(result.epochs_run, other.epochs_run)
        for key in ("best_epoch", "metrics", "stopped_early"):
            getattr(result, key).update(getattr(other, key))
    result.chosen = {h.name: chosen.chosen[h.name] for h in heads}
    result.selection_metrics = {h.name: chosen.metrics[h.name] for h in heads}
    return result

