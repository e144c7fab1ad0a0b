"""JPEG decoding and resizing on the device: a recorded preprocessing variant
(`--decode gpu`), never the default.

On a GPU node CPU decoding (PIL, then timm's resize: 3-6 ms per ImageNet
image per core) bounds ViT-S/B and 8-GPU nodes; the GPU decodes a batch of
JPEGs at once (`torchvision.io.decode_jpeg(list, device='cuda')`, nvJPEG)
and resizes it in place. What the device decoder refuses (PNG, CMYK or
progressive JPEGs it does not handle, a damaged file) is decoded per sample
on the CPU by torchvision, then PIL, and resized by the same code on the
device. The resize is torchvision's (antialiased, on uint8 tensors) with
timm's eval geometry (shorter side to floor(S / crop_pct), centre crop S),
so pixels differ slightly from PIL's (README: "GPU decoding").
"""

from __future__ import annotations

import io
import math
import warnings
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, decode_jpeg
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from vitreg.cache.names import ERROR
from vitreg.core import UsageError
from vitreg.core.samples import to_rgb

#: `preprocessing.decode` of a store decoded this way (absent: PIL, the default).
DEVICE_DECODE = "torchvision-device"

_MODES = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC,
          "nearest": InterpolationMode.NEAREST}


def geometry(config: dict[str, Any]) -> tuple[int, int, InterpolationMode]:
    """(shorter side after the resize, crop size, interpolation) of timm's
    eval transform for `config`; refuses what this path does not reproduce."""
    size = config["input_size"][-1]
    if config.get("crop_mode", "center") != "center":
        raise UsageError(f"--decode gpu crops at the centre only, not {config['crop_mode']!r}")
    interpolation = config.get("interpolation", "bicubic")
    if interpolation not in _MODES:
        raise UsageError(f"--decode gpu resizes with {', '.join(_MODES)}, not {interpolation!r}")
    crop_pct = config.get("crop_pct") or 1.0
    return math.floor(size / crop_pct), size, _MODES[interpolation]


def decode_batch(jpegs: list[bytes | None], config: dict[str, Any], device: torch.device
                 ) -> tuple[torch.Tensor, list[str], int]:
    """uint8 (B, 3, S, S) images on `device`, an error per sample ("" if it
    decoded; its image is then zeros), and how many fell back to the CPU."""
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its image decoders in favour of TorchCodec
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
        return _decode_batch(jpegs, config, device)


def _decode_batch(jpegs: list[bytes | None], config: dict[str, Any], device: torch.device
                  ) -> tuple[torch.Tensor, list[str], int]:
    short, size, mode = geometry(config)
    images = torch.zeros((len(jpegs), 3, size, size), dtype=torch.uint8, device=device)
    errors = [""] * len(jpegs)
    present = [i for i, data in enumerate(jpegs) if data is not None]
    decoded = _on_device([jpegs[i] for i in present], device)
    fallbacks = 0
    for i, image in zip(present, decoded):
        if image is None:
            fallbacks += 1
            try:
                image = _on_cpu(jpegs[i]).to(device)
            except Exception as exc:  # any decode failure becomes a failed row
                errors[i] = f"decode: {type(exc).__name__}: {exc}"
                continue
        resized = F.resize(image, [short], interpolation=mode, antialias=True)
        images[i] = F.center_crop(resized, [size, size])
    return images, errors, fallbacks


def _tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _on_device(datas: list[bytes], device: torch.device) -> list[torch.Tensor | None]:
    """Each JPEG decoded to uint8 RGB (3, H, W) on `device`, or None where the
    device decoder refused it: the batch at once, else sample by sample."""
    tensors = [_tensor(d) for d in datas]
    if device.type == "cuda" and tensors:
        try:
            return list(decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            pass  # one refused sample fails the batch: decode them one by one
    out: list[torch.Tensor | None] = []
    for tensor in tensors:
        try:
            out.append(decode_jpeg(tensor, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            out.append(None)
    return out


def _on_cpu(data: bytes) -> torch.Tensor:
    """uint8 RGB (3, H, W): torchvision's decoder (PNG, GIF, WebP, CMYK JPEG),
    then PIL for the rest (16-bit and float modes as `core.samples` scales them)."""
    try:
        return decode_image(_tensor(data), mode=ImageReadMode.RGB)
    except RuntimeError:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            rgb, _ = to_rgb(img)
        return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).contiguous()


def device_images(batch: dict[str, Any], config: dict[str, Any],
                  device: torch.device) -> torch.Tensor:
    """The images of a raw batch (`ShardStream(raw=True)`) on `device`; a sample
    that decodes nowhere gets its reason in `batch["error"]` (its row fails)."""
    images, errors, _ = decode_batch(batch["encoded"], config, device)
    batch[ERROR] = [old or new for old, new in zip(batch[ERROR], errors)]
    return images
