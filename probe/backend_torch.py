"""Train a grid of linear heads with torch in one pass per epoch (dinov2's
habit): one copy of every head per learning rate, cosine schedules, per-copy
early stopping, and the copy with the best validation metric kept."""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .fit_config import FitResult, TrainConfig
from .linear_heads import Head, LinearHeads, build_model
from .metrics import MetricSums
from .progress import epoch_done
from .registry import ProbeError
from .stream import TokenStream
from .tasks import Task

log = logging.getLogger("vitreg.probe")


@torch.no_grad()
def evaluate(
    model: LinearHeads, stream: TokenStream, task: Task, cfg: TrainConfig,
    active: list[int] | None = None,
) -> dict[int, dict[str, dict[str, float]]]:
    model.eval()
    idx = list(range(len(model.layers))) if active is None else active
    sums = {i: MetricSums() for i in idx}
    for batch in stream.batches(max(cfg.batch_size, 1024)):
        x = torch.as_tensor(batch.x, device=cfg.device).float()
        y = task.target(batch.y, cfg.device)
        for i, out in model(x, idx).items():
            sums[i].add(task.sample_metrics(out, y), batch.category)
    return {i: s.result() for i, s in sums.items()}



def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """`params`: parameters, or param groups each with its own `lr`."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    raise ProbeError(f"unknown optimizer {cfg.optimizer!r}: adam, adamw or sgd")


def cosine(total_steps: int):
    """LR factor at step t: half a cosine from 1 to 0 over `total_steps`."""
    return lambda t: 0.5 * (1.0 + math.cos(math.pi * min(t, total_steps) / max(1, total_steps)))


def train_epoch(
    model: LinearHeads, stream: TokenStream, task: Task, cfg: TrainConfig,
    optimizer: torch.optim.Optimizer, scheduler: Any, epoch: int, active: list[int],
) -> dict[int, float]:
    """One pass over the shuffled training stream; mean loss of each active head."""
    model.train()
    rng = np.random.default_rng([cfg.seed, epoch])
    loss_sum = {i: 0.0 for i in active}
    n = 0
    for batch in stream.batches(cfg.batch_size, rng=rng, buffer=cfg.shuffle_buffer):
        x = torch.as_tensor(batch.x, device=cfg.device).float()
        y = task.target(batch.y, cfg.device)
        outs = model(x, active)
        losses = {i: task.loss(out, y) for i, out in outs.items()}
        optimizer.zero_grad(set_to_none=True)
        torch.stack(list(losses.values())).sum().backward()
        optimizer.step()
        scheduler.step()
        for i, value in losses.items():
            loss_sum[i] += float(value.detach()) * len(batch)
        n += len(batch)
    return {i: v / max(n, 1) for i, v in loss_sum.items()}


def epoch_passes(n_items: int, cfg: TrainConfig) -> int:
    """Passes over the data in one epoch: enough that `epochs` epochs make `min_steps` steps.

    One pass when the store is large (the paper's epoch); several when a pass
    holds few mini-batches, so early stopping and the schedule count updates;
    at most MAX_PASSES_PER_EPOCH (a store of a few dozen tokens, as in the
    demo, converges in fewer steps than the per-pass overhead would cost).
    """
    per_pass = max(1, math.ceil(n_items / cfg.batch_size))
    return min(MAX_PASSES_PER_EPOCH, max(1, math.ceil(cfg.min_steps / (cfg.epochs * per_pass))))


#: The most passes over the data one epoch makes (see `epoch_passes`).
MAX_PASSES_PER_EPOCH = 50


def grid_heads(heads: list[Head], lrs: tuple[float, ...]) -> list[tuple[Head, float]]:
    """Every head once per learning rate, named `head@lr` when there are several."""
    if len(lrs) == 1:
        return [(h, lrs[0]) for h in heads]
    return [(Head(f"{h.name}@{lr:g}", h.out_dim, h.columns), lr) for h in heads for lr in lrs]


def fit_torch(
    train: TokenStream, val: TokenStream, task: Task, heads: list[Head], cfg: TrainConfig
) -> FitResult:
    """Train every head at every learning rate of the grid in one pass per epoch.

    Each copy stops on its own patience (a stopped copy is left out of the
    forward pass and restored to its best epoch); the copy with the best
    validation metric is kept for each head, as dinov2's linear evaluation does.
    """
    grid = grid_heads(heads, cfg.grid)
    run = _start(train, task, grid, cfg)
    curves: list[dict[str, Any]] = []
    epoch = 0
    for epoch in range(1, cfg.epochs + 1):
        curves.append(_train_and_validate(run, train, val, task, cfg, epoch))
        if cfg.patience is not None:
            run.active = [i for i in run.active if run.bad[i] < cfg.patience]
            if not run.active:
                break
    return _choose(_finish(run, curves, epoch, cfg), heads, grid, task, "lr")


@dataclass
class _GridFit:
    """A grid fit in progress: its model, optimiser and schedule, and per copy of a
    head its best (metric, epoch, state, metrics) so far and the bad epochs since."""

    model: LinearHeads
    optimizer: torch.optim.Optimizer
    scheduler: Any
    grid: list[tuple[Head, float]]
    passes: int
    best: dict[int, tuple[float | None, int, Any, dict]]
    bad: dict[int, int]
    active: list[int]

    @property
    def names(self) -> list[str]:
        return [h.name for h, _ in self.grid]


def _start(train: TokenStream, task: Task, grid: list[tuple[Head, float]],
           cfg: TrainConfig) -> _GridFit:
    model = build_model(train, task, [h for h, _ in grid], cfg)
    groups = [{"params": model.layers[i].parameters(), "lr": lr} for i, (_, lr) in enumerate(grid)]
    optimizer = make_optimizer(groups, cfg)
    passes = epoch_passes(len(train), cfg)
    steps = math.ceil(len(train) / cfg.batch_size) * passes * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine(steps))
    copies = range(len(grid))
    return _GridFit(model, optimizer, scheduler, grid, passes,
                    best={i: (None, 0, None, {}) for i in copies}, bad={i: 0 for i in copies},
                    active=list(copies))


def _train_and_validate(run: _GridFit, train: TokenStream, val: TokenStream, task: Task,
                        cfg: TrainConfig, epoch: int) -> dict[str, Any]:
    """One epoch (`run.passes` passes) of the active copies, then their validation and
    each one's best kept; returns the epoch's entry of the curves."""
    t0 = time.perf_counter()
    names, grid, active = run.names, run.grid, run.active
    factor = run.scheduler.get_last_lr()[0] / run.optimizer.param_groups[0]["initial_lr"]
    for k in range(run.passes):
        losses = train_epoch(run.model, train, task, cfg, run.optimizer, run.scheduler,
                             (epoch - 1) * run.passes + k + 1, active)
    metrics = evaluate(run.model, val, task, cfg, active)
    curve = {
        "epoch": epoch, "passes": epoch * run.passes, "steps": run.scheduler.last_epoch,
        "lr": {names[i]: grid[i][1] * factor for i in active} if len(grid) > 1
        else grid[0][1] * factor,
        "seconds": time.perf_counter() - t0,
        "train_loss": {names[i]: losses[i] for i in active},
        "val": {names[i]: metrics[i] for i in active},
    }
    for i in active:
        _keep_best(i, run.model, metrics[i], run.best, run.bad, task, cfg, epoch)
        log.info("epoch %d/%d %s: loss %.4g, val %s %.4g", epoch, cfg.epochs, names[i],
                 losses[i], task.monitor, metrics[i]["all"][task.monitor])
    epoch_done(epoch, cfg.epochs, len(grid),
               sum(cfg.patience is None or run.bad[i] < cfg.patience for i in active))
    return curve


def _finish(run: _GridFit, curves: list[dict[str, Any]], epoch: int,
            cfg: TrainConfig) -> FitResult:
    """Every copy restored to its best epoch, with its metrics there."""
    for i, (_, _, state, _) in run.best.items():
        if state is not None:
            run.model.layers[i].load_state_dict(state)
    names = run.names
    return FitResult(
        model=run.model, curves=curves,
        best_epoch={names[i]: b[1] for i, b in run.best.items()},
        metrics={names[i]: b[3] for i, b in run.best.items()},
        epochs_run=epoch,
        stopped_early={names[i]: bool(cfg.patience is not None and run.bad[i] >= cfg.patience)
                       for i in run.best},
        passes_per_epoch=run.passes,
    )


def _keep_best(i: int, model: Any, metrics: dict, best: dict, bad: dict, task: Task,
               cfg: TrainConfig, epoch: int) -> None:
    """Keep copy `i`'s state when its validation metric improved, else count a bad epoch."""
    value = metrics["all"][task.monitor]
    if cfg.patience is None or task.better(value, best[i][0]):
        best[i] = (value, epoch, copy.deepcopy(model.layers[i].state_dict()), metrics)
        bad[i] = 0
    else:
        bad[i] += 1


def _choose(result: FitResult, heads: list[Head], grid: list[tuple[Head, float]], task: Task,
            what: str) -> FitResult:
    """Keep, for each head, the grid value with the best validation metric."""
    if len(grid) == len(heads):  # one value: nothing to choose
        result.chosen = {h.name: {what: v} for h, (_, v) in zip(heads, grid)}
        result.picked = {h.name: j for j, h in enumerate(heads)}
        return result
    per = len(grid) // len(heads)
    for j, head in enumerate(heads):
        copies = grid[j * per:(j + 1) * per]
        scores = {v: result.metrics[g.name]["all"][task.monitor] for g, v in copies}
        pick, value = copies[0]
        result.picked[head.name] = j * per
        for k, (g, v) in enumerate(copies[1:], 1):
            if task.better(scores[v], scores[value]):
                pick, value = g, v
                result.picked[head.name] = j * per + k
        result.metrics[head.name] = result.metrics[pick.name]
        for key in ("best_epoch", "stopped_early"):
            table = getattr(result, key)
            if pick.name in table:
                table[head.name] = table[pick.name]
        result.chosen[head.name] = {what: value,
                                    "grid": {f"{v:g}": s for v, s in scores.items()}}
    return result

