"""Evaluate an official DINOv2 linear head on a store's pooled features, untrained.

DINOv2's `*_linear_head.pth` files hold an `nn.Linear((1 + n_blocks) * D, 1000)`
state dict (`weight`, `bias`) applied to [CLS] after the final norm joined with
the mean of the normalised patch tokens (registers excluded): with one block,
`pooled/cls` + `pooled/patch_mean`. Files are read with `weights_only=True`
or as safetensors; nothing is unpickled.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vitreg.cache.names import LABEL
from vitreg.core.checkpoint import read_state_dict
from vitreg.core.files import file_sha256

from .gather import PooledGather
from .metrics import MetricSums
from .registry import ProbeError
from .select import Part, select_labelled_images
from .stream import TokenStream
from .tasks import ClassifyTask


def load_head(path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of a linear head file; keys may carry a prefix (`linear.`, `head.`)."""
    state = read_state_dict(path, error=ProbeError, label=f"--head {path}")
    weights = {k: v for k, v in state.items()
               if k.endswith("weight") and torch.is_tensor(v) and v.ndim == 2}
    if len(weights) != 1:
        raise ProbeError(f"--head {path}: expected one 2-D weight, found {sorted(weights)}")
    wkey, weight = next(iter(weights.items()))
    bias = state.get(wkey[: -len("weight")] + "bias")
    if bias is None:
        bias = torch.zeros(weight.shape[0])
    if not torch.is_tensor(bias) or tuple(bias.shape) != (weight.shape[0],):
        shape = tuple(bias.shape) if torch.is_tensor(bias) else type(bias).__name__
        raise ProbeError(f"--head {path}: the bias is {shape} but the weight has "
                         f"{weight.shape[0]} rows; expected a bias of shape ({weight.shape[0]},)")
    for name, tensor in (("weight", weight), ("bias", bias)):
        if not (tensor.is_floating_point() and bool(torch.isfinite(tensor).all())):
            raise ProbeError(f"--head {path}: its {name} is not all finite floating-point "
                             f"numbers ({tensor.dtype}); is it a linear head?")
    if weight.shape[0] < 1 or weight.shape[1] < 1:
        raise ProbeError(f"--head {path}: its weight has shape {tuple(weight.shape)}")
    return weight.float(), bias.float()


def head_features(in_features: int, dim: int, registers: int) -> tuple[str, ...]:
    """The pooled features a head of this width expects."""
    options = {2 * dim: ("cls", "patch_mean"), dim: ("cls",)}
    if registers:
        options.setdefault((2 + registers) * dim, ("cls", "patch_mean", "registers"))
    if in_features in options:
        return options[in_features]
    blocks = in_features // dim - 1
    raise ProbeError(
        f"the head takes {in_features} features; with D = {dim} the store offers [CLS] + patch "
        f"mean ({2 * dim}) or [CLS] ({dim}). A head over {blocks} blocks' [CLS] tokens (DINOv2's "
        "'linear4') needs intermediate blocks the store does not hold"
    )


def evaluate_head(ctx, path: str) -> dict[str, Any]:
    """Top-1/top-5 of the head on every labelled image of the evaluation store."""
    weight, bias = load_head(path)
    part = _evaluation_part(ctx)
    g = part.store.geometry
    names = head_features(weight.shape[1], g.dim, g.registers)
    items = select_labelled_images(part)
    largest = int(items.fields[LABEL].max())
    if largest >= weight.shape[0]:
        raise ProbeError(f"a label is {largest} but the head has {weight.shape[0]} classes; "
                         "the store's labels must use the head's class indices")
    stream = TokenStream(part.store, items, PooledGather(names), in_memory=False)
    task = ClassifyTask(weight.shape[0])
    sums = MetricSums()
    w, b = weight.to(ctx.device), bias.to(ctx.device)
    with torch.no_grad():
        for batch in stream.batches(1024):
            x = torch.as_tensor(batch.x, device=ctx.device).float()
            out = x @ w.T + b
            sums.add(task.sample_metrics(out, task.target(batch.y, ctx.device)), batch.category)
    metrics = sums.result()["all"]
    return {
        "counts": {part.name: items.counts},
        "head": {"path": str(path), "sha256": file_sha256(path), "classes": int(weight.shape[0]),
                 "in_features": int(weight.shape[1]), "features": "+".join(names)},
        "evaluated_on": {"store": part.store.url, "images": len(items)},
        "metrics": {"head": metrics},
        "units": {"top1": "fraction of images classified correctly", "top5": "likewise, top 5"},
        "curves": [], "best_epoch": {}, "epochs_run": 0, "stopped_early": {},
    }


def _evaluation_part(ctx) -> Part:
    """--val when given, else every ok image of STORE (no training, so no split)."""
    if ctx.val.store is not ctx.train.store:
        return ctx.val
    rows = np.union1d(ctx.train.rows, ctx.val.rows)
    return Part("all", ctx.train.store, rows, ctx.train.percentile)
