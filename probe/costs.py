"""What a probe will cost on this machine, before it runs: its fits (items,
input width, outputs, copies, optimisation steps) from the model's geometry
and the probe's options, priced with a training step of torch measured here.

A fit's time is its steps, passes over the data and setup, priced in units
of a bare training step measured here (`PASS_STEPS`, `FIT_SETUP_STEPS`), plus
the multiply-adds of its linear heads (forward and backward: 6 per input x
output x item, for each copy of the grid) at the rate measured on this CPU. Early stopping
makes a fit shorter: the estimate assumes every epoch runs (an upper bound;
`position` on the demo stopped after 7-9 of 30).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from vitreg.core.registry import add_entry

from .backend_torch import MAX_PASSES_PER_EPOCH
from .registry import get_probe

#: Outlier patch tokens per patch (the 98th percentile), hence items per image of
#: the token probes (as many normal tokens are drawn).
OUTLIER_SHARE = 0.02


@dataclass(frozen=True)
class Fit:
    """One training run of linear heads."""

    items: int  # training items (tokens or images)
    val_items: int
    width: int  # input columns, summed over heads
    outputs: int  # outputs per head and copy
    copies: int  # learning rates trained side by side
    epochs: int
    min_steps: int
    batch: int

    @property
    def passes(self) -> int:
        per_pass = max(1, math.ceil(self.items / self.batch))
        if not self.min_steps:
            return 1
        return min(MAX_PASSES_PER_EPOCH,
                   max(1, math.ceil(self.min_steps / (self.epochs * per_pass))))

    @property
    def steps(self) -> int:
        return math.ceil(self.items / self.batch) * self.passes * self.epochs

    @property
    def flops(self) -> float:
        per_item = 6.0 * self.width * self.outputs * self.copies
        trained = self.items * self.passes * self.epochs
        evaluated = self.val_items * self.epochs / 3  # forward only
        return per_item * (trained + evaluated)


@dataclass(frozen=True)
class Sizes:
    """What a probe's fits depend on: the store's geometry, the images, its options."""

    dim: int
    patches: int
    patch_size: int
    registers: int
    train_images: int
    val_images: int
    num_classes: int
    options: dict[str, Any]

    def common(self) -> dict[str, int]:
        opts = self.options
        return dict(epochs=int(opts["epochs"]), min_steps=int(opts.get("min_steps", 0) or 0),
                    batch=int(opts["batch_size"]))

    def lrs(self) -> int:
        lr = self.options["lr"]
        return len(str(lr).split(",")) if isinstance(lr, str) else 1

    def tokens(self, images: int) -> int:
        return max(1, round(OUTLIER_SHARE * self.patches * images))


FitsFn = Callable[[str, Sizes], list[Fit]]
#: How each probe's fits are counted, by probe name (`prices`); a probe without an
#: entry (a plugin's that registers none) gets no estimate.
FITS: dict[str, FitsFn] = {}


def prices(*kinds: str) -> Callable[[FitsFn], FitsFn]:
    """Register `fn(kind, sizes) -> fits` as the cost model of probes `kinds`."""

    def add(fn: FitsFn) -> FitsFn:
        for kind in kinds:
            add_entry(FITS, kind, fn, what="cost model of probe")
        return fn

    return add


@prices("position", "reconstruct")
def _token_fits(kind: str, s: Sizes) -> list[Fit]:
    outputs = s.patches + 2 if kind == "position" else s.patch_size * s.patch_size * 3
    one = Fit(s.tokens(s.train_images), s.tokens(s.val_images), s.dim, outputs, s.lrs(),
              **s.common())
    return [one, one]  # normal tokens, then outlier tokens


@prices("classify")
def _classify_fits(kind: str, s: Sizes) -> list[Fit]:
    images = min(s.train_images, int(s.options["max_images"] or s.train_images))
    return [Fit(images, s.val_images, 3 * s.dim, s.num_classes, s.lrs(), **s.common())]


@prices("linear")
def _linear_fits(kind: str, s: Sizes) -> list[Fit]:
    widths = {"cls": s.dim, "patch_mean": s.dim, "registers": s.registers * s.dim}
    combos = [c.split("+") for c in str(s.options["features"]).split(",")]
    width = sum(widths[name] for combo in combos for name in combo)
    return [Fit(s.train_images, s.val_images, width, s.num_classes, 1, **s.common())]


def probe_fits(kind: str, *, dim: int, patches: int, patch_size: int, registers: int,
               train_images: int, val_images: int, num_classes: int = 1000,
               options: dict[str, Any] | None = None) -> list[Fit] | None:
    """The fits probe `kind` makes with `options` (the registry's defaults
    overlaid) on stores of this geometry; None for a probe with no cost model."""
    if kind not in FITS:
        return None
    opts = {**get_probe(kind).defaults(), **(options or {})}
    return FITS[kind](kind, Sizes(dim, patches, patch_size, registers, train_images,
                                  val_images, num_classes, opts))


#: What a fit costs beyond its optimisation steps, in bare steps (`StepCosts.step_s`)
#: so that it follows the machine's speed. Measured here (2 cores, planted stores of
#: 2,000 images, D = 48, a bare step 0.25 ms either way): on the idle machine linear
#: (6 epochs) took 0.14 s and position (2 fits of 100 passes) 0.58 s: a pass over the
#: data about 2 ms (8 steps), opening, selecting and feature statistics about 0.1 s
#: a fit (400 steps); under a load of 10 on the 2 cores, 17.6 ms (70 steps) and
#: 0.8 s (3,200). The values below sit between the two, nearer the idle machine,
#: whose times the 3x test checks (tests/test_probe/test_probe_costs.py).
PASS_STEPS = 16
FIT_SETUP_STEPS = 800


@dataclass(frozen=True)
class StepCosts:
    """A torch training step on this machine: its fixed seconds, and multiply-add rate."""

    step_s: float
    flops_per_s: float

    def seconds(self, fits: list[Fit]) -> float:
        return sum((FIT_SETUP_STEPS + f.passes * f.epochs * PASS_STEPS + f.steps) * self.step_s
                   + f.flops / self.flops_per_s for f in fits)


@functools.cache
def measure_step_costs() -> StepCosts:
    """Time Adam steps of a tiny and of a 256 x 512 -> 1024 linear head here
    (a fraction of a second on an idle machine): the tiny one is the fixed
    cost, the large one the rate."""
    width, outputs, batch = 512, 1024, 256
    tiny, large = math.inf, math.inf
    start = time.perf_counter()
    # rounds until about a second has passed: in a fresh process the first
    # rounds' steps all took ~20 ms (torch's threads starting), later 0.25 ms
    while time.perf_counter() - start < 1.0:
        tiny = min(tiny, _time_steps(8, 8, 8, repeats=20))
        large = min(large, _time_steps(batch, width, outputs, repeats=3))
    flops = 6.0 * batch * width * outputs
    return StepCosts(step_s=tiny, flops_per_s=flops / max(large - tiny, 1e-6))


#: Steps run before timing.
WARMUP = 10


def _time_steps(batch: int, width: int, outputs: int, *, repeats: int) -> float:
    """Seconds of one forward, backward and Adam step: the fastest of `repeats`
    after `WARMUP` (the first steps of a process took 100x longer, and the
    median moved with other processes' load more than the probes did)."""
    generator = torch.Generator().manual_seed(42)
    layer = torch.nn.Linear(width, outputs)
    optimizer = torch.optim.Adam(layer.parameters(), lr=1e-3)
    x = torch.randn(batch, width, generator=generator)
    y = torch.randint(0, outputs, (batch,), generator=generator)
    times = []
    for i in range(repeats + WARMUP):
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(layer(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i >= WARMUP:  # the first steps allocate and start torch's threads
            times.append(time.perf_counter() - start)
    return min(times)


def estimate_probe_seconds(kind: str, **geometry_and_options: Any) -> float | None:
    """Seconds probe `kind` should take here (see `probe_fits` for the arguments);
    None when its cost is unknown."""
    fits = probe_fits(kind, **geometry_and_options)
    return None if fits is None else measure_step_costs().seconds(fits)
