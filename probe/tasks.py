"""What a probe learns: a task's target, loss, per-sample metrics and the
metric early stopping watches (classification, grid position, pixel patch)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


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

