"""What one image costs a CPU run, measured on its first samples before the
loop: decoding it, and the model's forward pass. `--workers auto` on a CPU
chooses from them (`run.loop_settings`).

A cheap model is decode-bound: decoding in worker processes on every core,
with torch on one thread, ran the one-block model at 418-430 img/s on 2
cores (`bench/bench_host.py`, section 4) against 365-368 with decoding
between batches (the default before, measured at 0ac89de).
A costly one (ViT-S/14 at 224 px: 144-157 CPU ms per image on one thread
against 3.5-3.7 for decoding, as measured here)
is forward-bound, and workers beside its threads slow it
(`bench/bench_extract.py`): there no workers, decoding between batches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from .capture import normalize
from .model import LoadedModel
from .plan import Plan, plan_stream


@dataclass(frozen=True)
class Costs:
    """CPU milliseconds per image."""

    decode_ms: float  # read, decode and transform, one thread
    forward_ms: float  # the model's forward pass, one thread

    @property
    def decode_bound(self) -> bool:
        return self.decode_ms > self.forward_ms

    def __str__(self) -> str:
        return f"decoding {self.decode_ms:.1f} CPU ms/img, the model {self.forward_ms:.1f}"


def measure_costs(plan: Plan, loaded: LoadedModel, *, samples: int = 16,
                  forward_batch: int = 8) -> Costs | None:
    """Decode the plan's first `samples` rows in this thread, then run the
    model twice on `forward_batch` of them on one thread (the first pass warms
    up oneDNN's kernels) and time the second; CPU time, which other load moves
    less than wall time. None if the samples cannot be read: the loop then decodes
    between batches, and meets (and reports) the same error itself."""
    try:
        return _measure(plan, loaded, samples, forward_batch)
    except (OSError, ValueError, RuntimeError):
        return None


def _measure(plan: Plan, loaded: LoadedModel, samples: int, forward_batch: int) -> Costs | None:
    todo = np.zeros(plan.n_rows, dtype=bool)
    todo[:samples] = True
    stream = plan_stream(plan, loaded, todo, samples)
    start = time.process_time()
    batch = next(iter(stream), None)
    if batch is None:
        return None
    decode_ms = (time.process_time() - start) / len(batch["row"]) * 1e3
    cfg = loaded.data_config
    images = normalize(batch["image"][:forward_batch], cfg["mean"], cfg["std"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the work itself: idle OpenMP threads spin and add CPU time
    try:
        with torch.inference_mode():
            loaded.model.forward_features(images)
            start = time.process_time()
            loaded.model.forward_features(images)
        forward_ms = (time.process_time() - start) / len(images) * 1e3
    finally:
        torch.set_num_threads(threads)
    return Costs(decode_ms, forward_ms)
