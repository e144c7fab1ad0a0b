"""What a fit takes (`TrainConfig`) and what it returns (`FitResult`),
whichever backend trains it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .linear_heads import LinearHeads


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

