"""timm's eval transform, stopped at uint8: normalisation happens on the device."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from PIL import Image

from vitreg.core import UsageError
from vitreg.core.samples import pixel_transform

from .config import INTERPOLATIONS, PRESETS  # noqa: F401  (options' choices, kept there)

#: Keys of timm's data config that define the eval preprocessing.
_TRANSFORM_KEYS = ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std")

def preprocessing_config(data_config: dict[str, Any], *, preset: str = "timm",
                         crop_pct: float | None = None,
                         interpolation: str | None = None) -> dict[str, Any]:
    """The model's data config with a preset, then explicit settings, applied."""
    if preset not in PRESETS:
        raise UsageError(
            f"unknown preprocessing preset {preset!r}; choose from {', '.join(PRESETS)}")
    if interpolation is not None and interpolation not in INTERPOLATIONS:
        raise UsageError(f"unknown interpolation {interpolation!r}; "
                         f"choose from {', '.join(INTERPOLATIONS)}")
    if crop_pct is not None and not 0 < crop_pct <= 1:
        raise UsageError(f"crop_pct must be in (0, 1], not {crop_pct}")
    config = {**data_config, **PRESETS[preset]}
    if crop_pct is not None:
        config["crop_pct"] = crop_pct
    if interpolation is not None:
        config["interpolation"] = interpolation
    return config


def transform_kwargs(data_config: dict[str, Any]) -> dict[str, Any]:
    """The exact `timm.data.create_transform` arguments, JSON-ready for the store."""
    kwargs = {key: data_config[key] for key in _TRANSFORM_KEYS if key in data_config}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}


def eval_transform(data_config: dict[str, Any]) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> uint8 (3, S, S) tensor: resize and crop as timm does, no scaling.

    The float conversion and mean/std happen on the device (`capture.normalize`),
    so host memory and copies carry a quarter of the bytes. Built from the
    arguments the store records, the way probe rebuilds it (`core.samples`).
    """
    return pixel_transform(transform_kwargs(data_config))
