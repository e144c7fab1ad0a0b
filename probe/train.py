"""Train linear probes on token streams: the tasks (losses and per-sample
metrics), a grid of linear heads trained in one pass (dinov2's habit), cosine
schedules, per-head early stopping, and the scikit-learn cross-check.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .progress import epoch_done
from .registry import ProbeError
from .select import NORMAL, OUTLIER
from .stream import TokenStream

log = logging.getLogger("vitreg.probe")

CATEGORIES = {"normal": NORMAL, "outlier": OUTLIER}


# -- tasks ---------------------------------------------------------------------
class Task:
    """A loss, per-sample metrics and the metric early stopping watches."""

    monitor: str = "top1"
    mode: str = "max"  # "max": higher is better
    regression = False

    def target(self, y: np.ndarray, device: torch.device) -> torch.Tensor:
        return torch.as_tensor(y, dtype=torch.long, device=device)

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, y)

    def sample_metrics(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"top1": (out.argmax(1) == y).float()}

    def better(self, a: float, b: float | None) -> bool:
        if b is None or math.isnan(b):
            return not math.isnan(a)
        return a > b if self.mode == "max" else a < b


class ClassifyTask(Task):
    """Cross-entropy over classes; top-1 (and top-5 with at least 10 classes)."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes

    def sample_metrics(self, out, y):
        metrics = {"top1": (out.argmax(1) == y).float()}
        if out.shape[1] >= 10:
            top5 = out.topk(5, dim=1).indices
            metrics["top5"] = (top5 == y[:, None]).any(1).float()
        return metrics


class PositionTask(Task):
    """One of P grid positions: CE + w x MSE of the softmax-expected (row, col), in patches."""

    def __init__(self, grid: tuple[int, int], mse_weight: float) -> None:
        gh, gw = grid
        rr, cc = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
        self.coords = torch.stack([rr, cc], -1).reshape(-1, 2).float()
        self.mse_weight = mse_weight

    def _coords(self, device: torch.device) -> torch.Tensor:
        if self.coords.device != device:
            self.coords = self.coords.to(device)
        return self.coords

    def loss(self, out, y):
        coords = self._coords(out.device)
        expected = out.softmax(1) @ coords
        return F.cross_entropy(out, y) + self.mse_weight * F.mse_loss(expected, coords[y])

    def sample_metrics(self, out, y):
        coords = self._coords(out.device)
        pred = out.argmax(1)
        return {
            "top1": (pred == y).float(),
            "distance": (coords[pred] - coords[y]).norm(dim=1),
        }


class ReconstructTask(Task):
    """The pixel patch (0-255) from the token: MSE.

    Trained on targets centred by the training mean patch and divided by one
    scalar (their overall std): the loss stays proportional to the MSE, and
    the metrics are reported back on the 0-255 scale.
    """

    monitor, mode, regression = "mse", "min", True

    def __init__(self) -> None:
        self.mean: np.ndarray | None = None
        self.scale = 255.0
        self._mean_t: torch.Tensor | None = None

    def set_targets(self, mean: np.ndarray, scale: float) -> None:
        self.mean, self.scale, self._mean_t = np.asarray(mean, np.float32), float(scale), None

    def target(self, y, device):
        t = torch.as_tensor(y, device=device).float()
        if self.mean is None:
            return t.div_(self.scale)
        if self._mean_t is None or self._mean_t.device != t.device:
            self._mean_t = torch.as_tensor(self.mean, device=t.device)
        return (t - self._mean_t).div_(self.scale)

    def loss(self, out, y):
        return F.mse_loss(out, y)

    def sample_metrics(self, out, y):
        err = (out - y) * self.scale
        return {"mse": err.pow(2).mean(1), "l2": err.norm(dim=1)}


# -- heads -----------------------------------------------------------------------
@dataclass(frozen=True)
class Head:
    """One linear probe of the grid: which feature columns it sees, how many outputs."""

    name: str
    out_dim: int
    columns: np.ndarray | None = None  # None: every column


class LinearHeads(nn.Module):
    """Fixed standardisation, then one `nn.Linear` per head on its columns."""

    def __init__(self, in_dim: int, heads: list[Head], mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.names = [h.name for h in heads]
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("inv_std", torch.as_tensor(1.0 / std, dtype=torch.float32))
        self.columns: list[torch.Tensor | None] = []
        layers = []
        for h in heads:
            cols = None if h.columns is None else torch.as_tensor(h.columns, dtype=torch.long)
            self.columns.append(cols)
            layers.append(nn.Linear(in_dim if cols is None else len(cols), h.out_dim))
        self.layers = nn.ModuleList(layers)

    def to(self, *args, **kwargs):
        module = super().to(*args, **kwargs)
        device = self.mean.device
        self.columns = [None if c is None else c.to(device) for c in self.columns]
        return module

    def forward(self, x: torch.Tensor, active: list[int] | None = None) -> dict[int, torch.Tensor]:
        x = (x - self.mean) * self.inv_std
        out = {}
        for i in range(len(self.layers)) if active is None else active:
            cols = self.columns[i]
            out[i] = self.layers[i](x if cols is None else x.index_select(1, cols))
        return out


# -- configuration and statistics -------------------------------------------------
@dataclass
class TrainConfig:
    epochs: int
    patience: int | None
    lr: float
    optimizer: str  # adam | adamw | sgd
    weight_decay: float
    batch_size: int
    shuffle_buffer: int
    seed: int
    device: torch.device
    standardize: bool
    momentum: float = 0.9
    #: Learning rates trained side by side, one copy of every head each (default: `lr`).
    lrs: tuple[float, ...] = ()
    #: Fewest optimisation steps: a small store gets epochs of several passes.
    min_steps: int = 0

    @property
    def grid(self) -> tuple[float, ...]:
        return tuple(self.lrs) or (self.lr,)


def feature_stats(stream: TokenStream, standardize: bool, targets: bool) -> dict[str, Any]:
    """Per-column mean and std of the training features (and of the targets), one pass."""
    n = 0
    sums: dict[str, Any] = {"x1": 0.0, "x2": 0.0, "y1": 0.0, "y2": 0.0}
    for piece in stream.pieces():
        x = piece.x.astype(np.float64)
        sums["x1"] = sums["x1"] + x.sum(0)
        sums["x2"] = sums["x2"] + (x * x).sum(0)
        if targets:
            y = piece.y.astype(np.float64)
            sums["y1"] = sums["y1"] + y.sum(0)
            sums["y2"] = sums["y2"] + (y * y).sum()
        n += len(piece)
    if n == 0:
        raise ProbeError("no training items")
    mean = sums["x1"] / n
    if standardize:
        std = np.sqrt(np.maximum(sums["x2"] / n - mean**2, 0.0))
        std = np.where(std > 1e-6 * max(1.0, float(np.abs(mean).max())), std, 1.0)
    else:
        mean, std = np.zeros_like(mean), np.ones_like(mean)
    stats = {"mean": mean, "std": std, "n": n}
    if targets:
        y_mean = sums["y1"] / n
        y_var = sums["y2"] / (n * y_mean.size) - float((y_mean**2).mean())
        stats["target_mean"], stats["target_std"] = y_mean, float(np.sqrt(max(y_var, 1e-12)))
    return stats


# -- evaluation ----------------------------------------------------------------------
class MetricSums:
    """Sums of per-sample metrics, overall and per token category."""

    def __init__(self) -> None:
        self.sums: dict[str, dict[str, float]] = {}
        self.counts: dict[str, int] = {}

    def add(self, metrics: dict[str, torch.Tensor], category: np.ndarray) -> None:
        groups = {"all": None}
        for name, code in CATEGORIES.items():
            mask = category == code
            if mask.any():
                groups[name] = mask
        for group, mask in groups.items():
            sel = None if mask is None else torch.as_tensor(mask, device=_device_of(metrics))
            bucket = self.sums.setdefault(group, {})
            for key, values in metrics.items():
                v = values if sel is None else values[sel]
                bucket[key] = bucket.get(key, 0.0) + float(v.double().sum())
            self.counts[group] = self.counts.get(group, 0) + int(
                category.size if mask is None else mask.sum()
            )

    def result(self) -> dict[str, dict[str, float]]:
        out = {}
        for group, bucket in self.sums.items():
            n = self.counts[group]
            out[group] = {k: v / n for k, v in bucket.items()} | {"count": n}
        return out


def _device_of(metrics: dict[str, torch.Tensor]) -> torch.device:
    return next(iter(metrics.values())).device


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


# -- training ----------------------------------------------------------------------
@dataclass
class FitResult:
    model: LinearHeads
    curves: list[dict[str, Any]]
    best_epoch: dict[str, int]
    metrics: dict[str, dict[str, dict[str, float]]]
    epochs_run: int
    stopped_early: dict[str, bool] = field(default_factory=dict)
    passes_per_epoch: int = 1
    #: Per head: the grid value kept (`lr`, `C` or `alpha`) and each value's validation metric.
    chosen: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Per head: the index, in `model.layers`, of the grid copy kept.
    picked: dict[str, int] = field(default_factory=dict)
    #: Per head: its metrics on the selection split, when that is not the reported one.
    selection_metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)


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


def build_model(train: TokenStream, task: Task, heads: list[Head], cfg: TrainConfig) -> LinearHeads:
    stats = feature_stats(train, cfg.standardize, targets=task.regression)
    if task.regression:
        task.set_targets(stats["target_mean"], stats["target_std"])
    torch.manual_seed(cfg.seed)
    model = LinearHeads(stats["mean"].size, heads, stats["mean"], stats["std"])
    return model.to(cfg.device)


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
    inner = [h for h, _ in grid]
    model = build_model(train, task, inner, cfg)
    groups = [{"params": model.layers[i].parameters(), "lr": lr} for i, (_, lr) in enumerate(grid)]
    optimizer = make_optimizer(groups, cfg)
    passes = epoch_passes(len(train), cfg)
    steps = math.ceil(len(train) / cfg.batch_size) * passes * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine(steps))
    names = [h.name for h in inner]
    curves: list[dict[str, Any]] = []
    best: dict[int, tuple[float | None, int, Any, dict]] = {i: (None, 0, None, {})
                                                            for i in range(len(inner))}
    bad = {i: 0 for i in range(len(inner))}
    active = list(range(len(inner)))
    epoch = done = 0
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        factor = scheduler.get_last_lr()[0] / optimizer.param_groups[0]["initial_lr"]
        for k in range(passes):
            losses = train_epoch(model, train, task, cfg, optimizer, scheduler,
                                 (epoch - 1) * passes + k + 1, active)
        done += passes
        metrics = evaluate(model, val, task, cfg, active)
        curves.append({
            "epoch": epoch, "passes": done, "steps": scheduler.last_epoch,
            "lr": {names[i]: grid[i][1] * factor for i in active} if len(grid) > 1
            else grid[0][1] * factor,
            "seconds": time.perf_counter() - t0,
            "train_loss": {names[i]: losses[i] for i in active},
            "val": {names[i]: metrics[i] for i in active},
        })
        for i in active:
            _keep_best(i, model, metrics[i], best, bad, task, cfg, epoch)
            log.info("epoch %d/%d %s: loss %.4g, val %s %.4g", epoch, cfg.epochs, names[i],
                     losses[i], task.monitor, metrics[i]["all"][task.monitor])
        epoch_done(epoch, cfg.epochs, len(grid),
                   sum(cfg.patience is None or bad[i] < cfg.patience for i in active))
        if cfg.patience is not None:
            active = [i for i in active if bad[i] < cfg.patience]
            if not active:
                break
    for i, (_, _, state, _) in best.items():
        if state is not None:
            model.layers[i].load_state_dict(state)
    return _choose(FitResult(
        model=model, curves=curves,
        best_epoch={names[i]: b[1] for i, b in best.items()},
        metrics={names[i]: b[3] for i, b in best.items()},
        epochs_run=epoch,
        stopped_early={names[i]: bool(cfg.patience is not None and bad[i] >= cfg.patience)
                       for i in best},
        passes_per_epoch=passes,
    ), heads, grid, task, "lr")


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


# -- selection protocols --------------------------------------------------------------
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


# -- scikit-learn cross-check ---------------------------------------------------------
def _all(stream: TokenStream):
    pieces = list(stream.pieces())
    x = np.concatenate([p.x for p in pieces]).astype(np.float32)
    y = np.concatenate([p.y for p in pieces])
    c = np.concatenate([p.category for p in pieces])
    return x, y, c


def fit_sklearn(
    train: TokenStream, val: TokenStream, task: Task, heads: list[Head], cfg: TrainConfig,
    *, alpha: tuple[float, ...], C: tuple[float, ...], max_iter: int,
    select: TokenStream | None = None,
) -> FitResult:
    """LogisticRegression (classification tasks) or Ridge (reconstruction) per head.

    The regularisation is chosen from the grid `C` (LogisticRegression, fitted from the
    strongest to the weakest, each warm started from the last) or `alpha` (Ridge) on
    `select` (a held-out part of the training store), then the chosen model is scored
    on `val`. Without `select` the grid must hold one value.
    """
    from threadpoolctl import threadpool_limits

    x_tr, y_tr, _ = _all(train)
    x_va, y_va, c_va = _all(val)
    held = _all(select) if select is not None else None
    result = FitResult(model=None, curves=[], best_epoch={}, metrics={}, epochs_run=0)
    # As many BLAS/OpenMP threads as torch uses: oversubscribed, lbfgs ran 9x slower here.
    with threadpool_limits(limits=torch.get_num_threads()):
        for head in heads:
            _fit_sklearn_head(result, head, (x_tr, y_tr), held, (x_va, y_va, c_va), task, cfg,
                              alpha=alpha, C=C, max_iter=max_iter)
    return result


def _fit_sklearn_head(result: FitResult, head: Head, train, held, val, task: Task,
                      cfg: TrainConfig, *, alpha, C, max_iter) -> None:
    """Fit one head over its regularisation grid, choose on `held` (or take the one value),
    record the chosen value's metrics on `val` in `result`."""
    (x_tr, y_tr), (x_va, y_va, c_va) = train, val
    cols = slice(None) if head.columns is None else head.columns
    n_held = 0 if held is None else held[0].shape[0]
    a = x_tr[:, cols]
    b = x_va[:, cols] if held is None else np.concatenate([held[0][:, cols], x_va[:, cols]])
    if cfg.standardize:
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler().fit(a)
        a, b = scaler.transform(a), scaler.transform(b)
    if task.regression:
        y = y_tr.astype(np.float64)
        task.set_targets(y.mean(0), float(y.std()))
        t = task.target(y_tr, torch.device("cpu")).numpy()
        outs, what = _ridge_path(a, t, b, alpha), "alpha"
    else:
        if np.unique(y_tr).size < 2:
            raise ProbeError(f"{head.name}: the training items hold one class only")
        outs, what = _logistic_path(a, y_tr, b, head.out_dim, C, max_iter), "C"
    if held is None and len(outs) > 1:
        raise ProbeError(f"{head.name}: a grid of {what} needs a held-out selection part")
    scores, per_value = {}, {}
    for value, out in outs.items():
        per_value[value] = {"val": _sklearn_metrics(task, out[n_held:], y_va, c_va)}
        if held is not None:
            per_value[value]["select"] = _sklearn_metrics(task, out[:n_held], held[1], held[2])
        scores[value] = per_value[value]["select" if held is not None else "val"]["all"][
            task.monitor]
    pick = next(iter(scores))
    for value in scores:
        if task.better(scores[value], scores[pick]):
            pick = value
    result.metrics[head.name] = per_value[pick]["val"]
    if held is not None:
        result.selection_metrics[head.name] = per_value[pick]["select"]
    result.chosen[head.name] = {what: pick, "grid": {f"{v:g}": m for v, m in scores.items()}}
    log.info("sklearn %s (%s=%g): %s", head.name, what, pick, per_value[pick]["val"]["all"])


def _sklearn_metrics(task: Task, out: np.ndarray, y: np.ndarray,
                     category: np.ndarray) -> dict[str, dict[str, float]]:
    sums = MetricSums()
    y_t = task.target(y, torch.device("cpu"))
    sums.add(task.sample_metrics(torch.as_tensor(out, dtype=torch.float32), y_t), category)
    return sums.result()


def _ridge_path(a: np.ndarray, t: np.ndarray, b: np.ndarray,
                alphas: tuple[float, ...]) -> dict[float, np.ndarray]:
    from sklearn.linear_model import Ridge

    return {alpha: Ridge(alpha=alpha).fit(a, t).predict(b) for alpha in alphas}


def _logistic_path(a: np.ndarray, y: np.ndarray, b: np.ndarray, out_dim: int,
                   Cs: tuple[float, ...], max_iter: int) -> dict[float, np.ndarray]:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=max_iter, warm_start=True)
    outs = {}
    for c in sorted(Cs):
        model.set_params(C=c)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(a, y)
        scores = np.full((b.shape[0], out_dim), -np.inf, dtype=np.float64)
        scores[:, model.classes_] = model.decision_function(b).reshape(b.shape[0], -1) \
            if model.classes_.size > 2 else _binary_scores(model, b)
        outs[c] = scores
    return outs


def _binary_scores(model, x: np.ndarray) -> np.ndarray:
    d = model.decision_function(x)
    return np.stack([-d / 2, d / 2], axis=1)
