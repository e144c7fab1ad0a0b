"""timm's eval transform, stopped at uint8: normalisation happens on the device."""

from __future__ import annotations

from typing import Any, Callable

import torch
from PIL import Image
from timm.data import create_transform

#: Keys of timm's data config that define the eval preprocessing.
_TRANSFORM_KEYS = ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std")


def transform_kwargs(data_config: dict[str, Any]) -> dict[str, Any]:
    """The exact `timm.data.create_transform` arguments, JSON-ready for the store."""
    kwargs = {key: data_config[key] for key in _TRANSFORM_KEYS if key in data_config}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}


def eval_transform(data_config: dict[str, Any]) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> uint8 (3, S, S) tensor: resize and crop as timm does, no scaling.

    `normalize=False` makes timm end with `MaybePILToTensor`, which keeps uint8;
    the float conversion and mean/std happen on the device (`capture.normalize`),
    so host memory and copies carry a quarter of the bytes.
    """
    kwargs = transform_kwargs(data_config)
    kwargs.pop("mean", None)
    kwargs.pop("std", None)
    return create_transform(**kwargs, is_training=False, normalize=False)
