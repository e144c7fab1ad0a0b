"""The probe registry: each probe, its options with the paper's values as
defaults, filled by a decorator that refuses duplicates (timm's `register_model`).

The CLI flags and `run_probe`'s keyword arguments are both built from here, so
a default lives in exactly one place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vitreg.cache import OUTLIER_PERCENTILE, VitregError
from vitreg.core.numbers import (
    COUNT,
    COUNT_OR_ZERO,
    FRACTION_OPEN,
    PERCENTILE_OPEN,
    SEED,
    Range,
)
from vitreg.core.options import Option, defaults
from vitreg.core.registry import RegistryError, add_entry

__all__ = ["COMMON_OPTIONS", "PROBES", "Option", "ProbeError", "ProbeSpec", "get_probe",
           "register_probe", "unregister_probe"]


class ProbeError(VitregError, ValueError):
    """A probe cannot run on these stores with these options; the message says why."""


@dataclass(frozen=True)
class ProbeSpec:
    """A registered probe: what it measures and the options it takes."""

    name: str
    run: Callable[..., dict[str, Any]]
    summary: str
    options: tuple[Option, ...]

    @property
    def all_options(self) -> tuple[Option, ...]:
        return COMMON_OPTIONS + self.options

    def defaults(self) -> dict[str, Any]:
        return defaults(self.all_options)


#: Every registered probe, by name, in registration order.
PROBES: dict[str, ProbeSpec] = {}


def register_probe(
    name: str, *, summary: str, options: tuple[Option, ...] = ()
) -> Callable[[Callable[..., dict[str, Any]]], Callable[..., dict[str, Any]]]:
    """Register `fn(ctx) -> result` as probe `name`: it becomes `vitreg probe NAME`, a
    kind a study plan may name, and a row of the report's tables when it has one. A
    second `name` is refused (`RegistryError`)."""

    def decorate(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        clash = {o.name for o in options} & {o.name for o in COMMON_OPTIONS}
        if clash:
            raise RegistryError(f"probe {name!r} redefines common option(s) {sorted(clash)}")
        spec = ProbeSpec(name=name, run=fn, summary=summary, options=tuple(options))
        add_entry(PROBES, name, spec, what="probe")
        return fn

    return decorate


def unregister_probe(name: str) -> None:
    """Remove probe `name` (a test's or a plugin's); its command stays until the
    probe group is built again."""
    PROBES.pop(name, None)


def get_probe(name: str) -> ProbeSpec:
    if name not in PROBES:
        raise ProbeError(f"unknown probe {name!r}; known probes: {', '.join(PROBES)}")
    return PROBES[name]


#: Options every probe takes (besides STORE, --val and --out).
COMMON_OPTIONS: tuple[Option, ...] = (
    Option("val_fraction", 0.2, "without --val: fraction of STORE's images held out for "
           "validation (a seeded permutation of images, never of tokens)",
           range=FRACTION_OPEN),
    Option("seed", 42, "seed of the split, the token draws, the shuffling and the "
           "initialisation (the paper's)", range=SEED),
    Option("allow_val_overlap", False, "accept a --val store that shares images (keys) with "
           "STORE; by default that is refused"),
    Option("allow_partial", False, "use the ok rows of a store that is still being written"),
    Option("block", None, "read this block's tokens, norms and attention (1 the first, -1 the "
           "last; default the last): stores extracted with --blocks", type=int,
           range=Range(-4096, 4096, integer=True)),  # the store's depth is checked on open
    Option("device", "auto", "where the torch backend trains", choices=("auto", "cpu", "cuda")),
    Option("backend", "torch", "torch (the paper's probes) or sklearn (LogisticRegression / "
           "Ridge on the same tokens, a cross-check for small stores)",
           choices=("torch", "sklearn")),
    Option("percentile", OUTLIER_PERCENTILE, "outlier rule: a patch token is an outlier when "
           "its norm is above this percentile of the store's patch-token norms",
           range=PERCENTILE_OPEN),
    Option("threshold_from", None, "store whose outlier threshold both the train and the val "
           "part use (default: STORE's; with --val the val store's own is never used: one "
           "threshold per model)", type=str),
    Option("protocol", "heldout", "what chooses the epoch and the learning rate: heldout (a "
           "held-out part of STORE's images, --select-fraction; the reported split is seen "
           "once) or study (the study's early stopping on the reported split, patience 3; a "
           "learning-rate grid is still chosen on the held-out part)",
           choices=("heldout", "study")),
    Option("select_fraction", 0.1, "fraction of the training images held out to choose the "
           "epoch and the learning rate (never the reported images)", range=FRACTION_OPEN),
    Option("batch_size", 256, "mini-batch size (not given by the paper)", range=COUNT),
    Option("standardize", True, "standardise features with the training tokens' mean and std "
           "(an affine map: the linear model class is unchanged)"),
    Option("in_memory", "auto", "keep the gathered selected tokens in memory (yes), re-read them "
           "from the store every epoch (no), or yes when they fit --memory-budget (auto)",
           choices=("auto", "yes", "no")),
    Option("memory_budget", 1024, "MiB the selected tokens may take in memory under "
           "--in-memory auto (and the most --backend sklearn accepts)", range=COUNT_OR_ZERO),
    Option("shuffle_buffer", 8192, "items in the bounded shuffle buffer that mixes chunks",
           range=COUNT),
)
