"""Train linear probes on token streams: the tasks (losses and per-sample
metrics), a grid of linear heads trained in one pass (dinov2's habit), cosine
schedules, per-head early stopping, and the scikit-learn cross-check.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

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


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
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


def fit_torch(
    train: TokenStream, val: TokenStream, task: Task, heads: list[Head], cfg: TrainConfig
) -> FitResult:
    """Train every head in one pass per epoch; each stops on its own patience.

    A stopped head is left out of the forward pass, so its weights (restored
    to its best epoch at the end) no longer move.
    """
    model = build_model(train, task, heads, cfg)
    optimizer = make_optimizer(model.parameters(), cfg)
    steps = math.ceil(len(train) / cfg.batch_size) * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine(steps))
    names = [h.name for h in heads]
    curves: list[dict[str, Any]] = []
    best: dict[int, tuple[float | None, int, Any, dict]] = {
        i: (None, 0, None, {}) for i in range(len(heads))
    }
    bad = {i: 0 for i in range(len(heads))}
    active = list(range(len(heads)))
    epoch = 0
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        losses = train_epoch(model, train, task, cfg, optimizer, scheduler, epoch, active)
        metrics = evaluate(model, val, task, cfg, active)
        curves.append({
            "epoch": epoch, "lr": lr, "seconds": time.perf_counter() - t0,
            "train_loss": {names[i]: losses[i] for i in active},
            "val": {names[i]: metrics[i] for i in active},
        })
        for i in active:
            value = metrics[i]["all"][task.monitor]
            if cfg.patience is None or task.better(value, best[i][0]):
                state = copy.deepcopy(model.layers[i].state_dict())
                best[i] = (value, epoch, state, metrics[i])
                bad[i] = 0
            else:
                bad[i] += 1
            log.info("epoch %d/%d %s: loss %.4g, val %s %.4g", epoch, cfg.epochs, names[i],
                     losses[i], task.monitor, value)
        if cfg.patience is not None:
            active = [i for i in active if bad[i] < cfg.patience]
            if not active:
                break
    for i, (_, _, state, _) in best.items():
        if state is not None:
            model.layers[i].load_state_dict(state)
    return FitResult(
        model=model, curves=curves,
        best_epoch={names[i]: b[1] for i, b in best.items()},
        metrics={names[i]: b[3] for i, b in best.items()},
        epochs_run=epoch,
        stopped_early={names[i]: bool(cfg.patience is not None and bad[i] >= cfg.patience)
                       for i in best},
    )


# -- scikit-learn cross-check ---------------------------------------------------------
def _all(stream: TokenStream):
    pieces = list(stream.pieces())
    x = np.concatenate([p.x for p in pieces]).astype(np.float32)
    y = np.concatenate([p.y for p in pieces])
    c = np.concatenate([p.category for p in pieces])
    return x, y, c


def fit_sklearn(
    train: TokenStream, val: TokenStream, task: Task, heads: list[Head], cfg: TrainConfig,
    *, alpha: float, C: float, max_iter: int,
) -> FitResult:
    """LogisticRegression (classification tasks) or Ridge (reconstruction) per head."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.preprocessing import StandardScaler

    x_tr, y_tr, _ = _all(train)
    x_va, y_va, c_va = _all(val)
    metrics: dict[str, dict] = {}
    for head in heads:
        cols = slice(None) if head.columns is None else head.columns
        a, b = x_tr[:, cols], x_va[:, cols]
        if cfg.standardize:
            scaler = StandardScaler().fit(a)
            a, b = scaler.transform(a), scaler.transform(b)
        if task.regression:
            y = y_tr.astype(np.float64)
            task.set_targets(y.mean(0), float(y.std()))
            t = task.target(y_tr, torch.device("cpu")).numpy()
            out = Ridge(alpha=alpha).fit(a, t).predict(b)
        else:
            classes = np.unique(y_tr)
            if classes.size < 2:
                raise ProbeError(f"{head.name}: the training items hold one class only")
            model = LogisticRegression(C=C, max_iter=max_iter).fit(a, y_tr)
            scores = np.full((b.shape[0], head.out_dim), -np.inf, dtype=np.float64)
            scores[:, model.classes_] = model.decision_function(b).reshape(b.shape[0], -1) \
                if classes.size > 2 else _binary_scores(model, b)
            out = scores
        out_t = torch.as_tensor(np.asarray(out), dtype=torch.float32)
        sums = MetricSums()
        sums.add(task.sample_metrics(out_t, task.target(y_va, torch.device("cpu"))), c_va)
        metrics[head.name] = sums.result()
        log.info("sklearn %s: %s", head.name, metrics[head.name]["all"])
    return FitResult(model=None, curves=[], best_epoch={}, metrics=metrics, epochs_run=0)


def _binary_scores(model, x: np.ndarray) -> np.ndarray:
    d = model.decision_function(x)
    return np.stack([-d / 2, d / 2], axis=1)
