"""Per-sample metrics summed overall and per token category (normal, outlier)."""

from __future__ import annotations

import numpy as np
import torch

from .select import NORMAL, OUTLIER

CATEGORIES = {"normal": NORMAL, "outlier": OUTLIER}


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

