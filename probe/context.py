"""What a probe runs on (`ProbeContext`: the two parts of the split, its
options resolved, the device, notes) and the grids its options name."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .fit_config import TrainConfig
from .registry import ProbeError
from .select import Part


@dataclass
class ProbeContext:
    """What a probe runs on: the two parts of the split, options, device, notes."""

    kind: str
    options: dict[str, Any]
    train: Part
    val: Part
    device: torch.device
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def train_config(self, *, optimizer: str, weight_decay: float, patience: int | None,
                     momentum: float = 0.9) -> TrainConfig:
        o = self.options
        lrs = parse_grid(o["lr"], "lr")
        return TrainConfig(
            epochs=int(o["epochs"]), patience=patience, lr=lrs[0], lrs=lrs,
            min_steps=int(o.get("min_steps", 0)), optimizer=optimizer,
            weight_decay=weight_decay, batch_size=max(1, int(o["batch_size"])),
            shuffle_buffer=int(o["shuffle_buffer"]), seed=int(o["seed"]), device=self.device,
            standardize=bool(o["standardize"]), momentum=momentum,
        )



def parse_grid(value: Any, name: str) -> tuple[float, ...]:
    """'0.001,0.01' (or one number) -> (0.001, 0.01): the values a grid search tries."""
    try:
        values = tuple(float(v) for v in str(value).split(",") if v.strip())
    except ValueError as exc:
        raise ProbeError(f"--{name.replace('_', '-')} {value!r}: give comma-separated "
                         "numbers, e.g. 0.001,0.01") from exc
    if not values or any(not 0 < v < float("inf") for v in values):
        raise ProbeError(f"--{name.replace('_', '-')} {value!r}: give one or more positive "
                         "numbers, comma-separated")
    return values

