"""The linear heads a probe trains: one `nn.Linear` per head on its feature
columns, after a fixed standardisation measured on the training features."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .fit_config import TrainConfig
from .registry import ProbeError
from .stream import TokenStream
from .tasks import Task


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


def build_model(train: TokenStream, task: Task, heads: list[Head], cfg: TrainConfig) -> LinearHeads:
    stats = feature_stats(train, cfg.standardize, targets=task.regression)
    if task.regression:
        task.set_targets(stats["target_mean"], stats["target_std"])
    torch.manual_seed(cfg.seed)
    model = LinearHeads(stats["mean"].size, heads, stats["mean"], stats["std"])
    return model.to(cfg.device)

