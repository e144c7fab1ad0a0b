"""Count the host syncs of the extraction's device step (a test instrument,
not product code): `tests/test_extract/test_step.py` asserts there are none
per batch."""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from vitreg.extract.step import Step

#: Tensor methods that make the host wait for a CUDA device.
SYNCS = {
    torch.Tensor.cpu: "cpu", torch.Tensor.item: "item", torch.Tensor.__bool__: "bool",
    torch.Tensor.numpy: "numpy", torch.Tensor.tolist: "tolist",
    torch.Tensor.nonzero: "nonzero", torch.nonzero: "nonzero",
}


class CountSyncs(TorchFunctionMode):
    """Counts the calls that would make the host wait for a CUDA device
    (`SYNCS`, a blocking `.to("cpu")`) and boolean-mask indexing (its output
    size is read on the host). On a CPU every such call is counted: on CUDA
    each would be a sync."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in SYNCS:
            self.calls[SYNCS[func]] += 1
        elif func is torch.Tensor.to and not kwargs.get("non_blocking") and any(
                str(a) == "cpu" for a in (*args[1:], kwargs.get("device"))):
            self.calls["to(cpu)"] += 1
        elif func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__):
            index = args[1] if isinstance(args[1], tuple) else (args[1],)
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in index):
                self.calls["mask"] += 1
        return func(*args, **kwargs)


def syncs_per_step(step: Step, batches: list[tuple[torch.Tensor, np.ndarray]]) -> dict[str, float]:
    """Run `batches` through `step` pipelined (as the extraction loop does) and
    count the syncs per step after the first `depth` (which allocate the
    staging buffer sets)."""
    warm = len(step._ring)
    counter = CountSyncs()
    in_flight = None
    for i, (images, rows) in enumerate(batches):
        if i == warm:
            counter.__enter__()
        launched = step.launch(images, rows)
        if in_flight is not None:
            step.finish(in_flight)
        in_flight = launched
    if in_flight is not None:
        step.finish(in_flight)
    if len(batches) > warm:
        counter.__exit__(None, None, None)
    counted = max(1, len(batches) - warm)
    return {name: n / counted for name, n in counter.calls.items()}
