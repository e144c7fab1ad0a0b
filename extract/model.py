"""Build a timm ViT with its weights, and capture every store array in one forward pass."""

from __future__ import annotations

import hashlib
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import timm
import torch

from vitreg.cache import Geometry, VitregError
from vitreg.core.checkpoint import read_state_dict

from .adapters import Adapter, adapter_for
from .transforms import preprocessing_config


class WeightsError(VitregError, RuntimeError):
    """The requested weights cannot be loaded."""


@dataclass
class LoadedModel:
    model: torch.nn.Module
    geometry: Geometry
    data_config: dict[str, Any]
    weights: str
    weights_sha256: str
    heads: int
    patch_size: int
    dynamic_img_size: bool
    notes: list[str] = field(default_factory=list)
    preset: str = "timm"  # the named preprocessing protocol applied to data_config
    adapter: Adapter | None = None  # how vitreg reads this model (`extract.adapters`)


def round_img_size(size: int, patch: int) -> tuple[int, str | None]:
    """Round `size` down to a multiple of the patch size, saying so if it moved."""
    rounded = (size // patch) * patch
    if rounded < patch:
        raise ValueError(f"image size {size} is smaller than one {patch}-px patch")
    if rounded != size:
        return rounded, (f"image size {size} is not a multiple of the patch size {patch}: "
                         f"using {rounded}")
    return rounded, None


def meta_adapter(name: str) -> Adapter:
    """The adapter of a weightless (meta) build of `name`; UnsupportedModelError
    (one sentence) for a model vitreg cannot read exactly."""
    return adapter_for(timm.create_model(name, pretrained=False, num_classes=0, device="meta"))


def adapter_geometry(adapter: Adapter, size: int) -> Geometry:
    """The token layout of `adapter`'s model run at `size` px."""
    layout = adapter.prefix_layout()
    grid = adapter.grid() if size == adapter.img_size() else (size // adapter.patch_size(),) * 2
    return Geometry(registers=layout.count("register"), grid=grid, dim=adapter.dim(),
                    depth=adapter.depth(), img_size=size, prefix=len(layout), layout=layout)


def model_geometry(name: str, img_size: int | None = None) -> Geometry:
    """The token layout of `name` at `img_size`, from a weightless (meta) build."""
    adapter = meta_adapter(name)
    size = round_img_size(img_size, adapter.size_step())[0] if img_size else adapter.img_size()
    return adapter_geometry(adapter, size)


def build_model(
    name: str, *, weights: str = "pretrained", img_size: int | None = None, seed: int = 42,
    preprocess: str = "timm", crop_pct: float | None = None, interpolation: str | None = None,
) -> LoadedModel:
    """Create `name` with `weights` ('pretrained', 'random' or a file path).

    Always built with `num_classes=0`: vitreg reads features, and many
    checkpoints (DINOv2 backbones, OpenCLIP towers) carry no classifier.
    The model is built at the size it runs (`img_size=S`), so timm resamples a
    position embedding once, when the weights load, from whatever grid they
    were saved at: the network equals `timm.create_model(name, img_size=S)`
    loading them. Only a model that cannot be built at S falls back to timm's
    `dynamic_img_size` (resampling at every forward pass), and says so.
    The data config is the model's, with the `preprocess` preset and then
    `crop_pct` / `interpolation` applied (`transforms.preprocessing_config`).
    """
    meta = meta_adapter(name)
    native = meta.img_size()
    notes: list[str] = []
    size = native
    if img_size is not None:
        size, note = round_img_size(img_size, meta.size_step())
        if note:
            notes.append(note)
    resize = size != native and not meta.any_size
    model = _create(name, weights, seed, **({"img_size": size} if resize else {}))
    if model is None or (not meta.any_size and adapter_for(model).img_size() != size):
        notes.append(f"{name} cannot be built at {size} px: running it through timm's "
                     "dynamic_img_size, which resamples the position embedding at every pass")
        model = _create(name, weights, seed, dynamic_img_size=True)
    if weights not in ("pretrained", "random"):
        _load_file(model, Path(weights))
    model.eval()
    loaded = _describe(model, size, weights, notes)
    loaded.data_config = preprocessing_config(loaded.data_config, preset=preprocess,
                                              crop_pct=crop_pct, interpolation=interpolation)
    loaded.preset = preprocess
    return loaded


def _create(name: str, weights: str, seed: int, **kwargs: Any) -> torch.nn.Module | None:
    """timm's model with `kwargs`, or None if its definition refuses them
    (a size fixed in the model's own arguments). Seeded: random weights repeat."""
    torch.manual_seed(seed)
    try:
        if weights == "pretrained":
            return _create_pretrained(name, num_classes=0, **kwargs)
        return timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    except TypeError:
        if "img_size" not in kwargs:
            raise
        return None


def _describe(model: torch.nn.Module, size: int, weights: str, notes: list[str]) -> LoadedModel:
    adapter = adapter_for(model)
    data_config = timm.data.resolve_model_data_config(model)
    # resolve_model_data_config reports the size the model was built for
    # (518 for DINOv2), not the one we run: set the size we use.
    data_config["input_size"] = (3, size, size)
    return LoadedModel(
        model=model, geometry=adapter_geometry(adapter, size), data_config=data_config,
        weights=weights, weights_sha256=state_sha256(model), heads=adapter.heads(),
        patch_size=adapter.patch_size(),
        dynamic_img_size=adapter.any_size or bool(getattr(model, "dynamic_img_size", False)),
        notes=notes,
        adapter=adapter,
    )


def _hub_reachable(timeout: float = 3.0) -> bool:
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _create_pretrained(name: str, **kwargs: Any) -> torch.nn.Module:
    """Pretrained weights from timm's hub or local cache; fail fast offline."""
    from huggingface_hub import constants

    offline = constants.HF_HUB_OFFLINE or not _hub_reachable()
    # Offline, the hub client would retry for about a minute before failing.
    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = offline
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except TypeError:  # the model's arguments, not the weights: the caller decides
        raise
    except Exception as exc:  # timm raises several types for a missing file
        where = "no network and the weights are not in the local cache" if offline else str(exc)
        raise WeightsError(
            f"cannot load pretrained weights for {name}: {where}. Download them once on a "
            "machine with network (timm.create_model(name, pretrained=True) fills the "
            "Hugging Face cache, HF_HOME), or pass --weights PATH to a .safetensors or "
            "torch checkpoint, or --weights random for a test run."
        ) from exc
    finally:
        constants.HF_HUB_OFFLINE = previous


def _load_file(model: torch.nn.Module, path: Path) -> None:
    from timm.models.vision_transformer import checkpoint_filter_fn

    state = read_state_dict(path, error=WeightsError, label=f"--weights {path}")
    state = checkpoint_filter_fn(state, model)
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # torch: "size mismatch for ..."
        first = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line),
                     str(exc).splitlines()[0])
        raise WeightsError(f"{path} does not fit the model: {first.rstrip('.')}; the "
                           "checkpoint is of "
                           "another model or size: pass the --model it was saved from") from exc
    if missing or unexpected:
        raise WeightsError(
            f"{path} does not fit the model: missing {missing[:5]}..., unexpected "
            f"{unexpected[:5]}... ({len(missing)} missing, {len(unexpected)} unexpected)"
        )


def state_sha256(model: torch.nn.Module) -> str:
    """sha256 over the parameters and buffers as loaded, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
