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
import torch.nn.functional as F

from vitreg.cache import Geometry, VitregError
from vitreg.core.checkpoint import read_state_dict

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


def round_img_size(size: int, patch: int) -> tuple[int, str | None]:
    """Round `size` down to a multiple of the patch size, saying so if it moved."""
    rounded = (size // patch) * patch
    if rounded < patch:
        raise ValueError(f"image size {size} is smaller than one {patch}-px patch")
    if rounded != size:
        return rounded, (f"image size {size} is not a multiple of the patch size {patch}: "
                         f"using {rounded}")
    return rounded, None


def _native_size(name: str) -> tuple[int, int]:
    """Native image size and patch size of a timm model, without building it."""
    probe = timm.create_model(name, pretrained=False, num_classes=0, device="meta")
    return probe.patch_embed.img_size[0], probe.patch_embed.patch_size[0]


def model_geometry(name: str, img_size: int | None = None) -> Geometry:
    """The token layout of `name` at `img_size`, from a weightless (meta) build."""
    native, patch = _native_size(name)
    size = round_img_size(img_size, patch)[0] if img_size else native
    meta = timm.create_model(name, pretrained=False, num_classes=0, device="meta")
    return Geometry(registers=meta.num_prefix_tokens - 1, grid=(size // patch, size // patch),
                    dim=meta.embed_dim, depth=len(meta.blocks), img_size=size,
                    prefix=meta.num_prefix_tokens)


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
    native, patch = _native_size(name)
    notes: list[str] = []
    size = native
    if img_size is not None:
        size, note = round_img_size(img_size, patch)
        if note:
            notes.append(note)
    model = _create(name, weights, seed, **({"img_size": size} if size != native else {}))
    if model is None or tuple(model.patch_embed.img_size) != (size, size):
        notes.append(f"{name} cannot be built at {size} px: running it through timm's "
                     "dynamic_img_size, which resamples the position embedding at every pass")
        model = _create(name, weights, seed, dynamic_img_size=True)
    if weights not in ("pretrained", "random"):
        _load_file(model, Path(weights))
    model.eval()
    loaded = _describe(name, model, size, patch, weights, notes)
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


def _describe(
    name: str, model: torch.nn.Module, size: int, patch: int, weights: str, notes: list[str]
) -> LoadedModel:
    if getattr(model, "cls_token", None) is None:
        raise VitregError(f"{name} has no [CLS] token; vitreg's store contract needs one")
    registers = model.num_prefix_tokens - 1
    grid = (size // patch, size // patch)
    geometry = Geometry(
        registers=registers, grid=grid, dim=model.embed_dim, depth=len(model.blocks),
        img_size=size, prefix=model.num_prefix_tokens,
    )
    data_config = timm.data.resolve_model_data_config(model)
    # resolve_model_data_config reports the size the model was built for
    # (518 for DINOv2), not the one we run: set the size we use.
    data_config["input_size"] = (3, size, size)
    return LoadedModel(
        model=model, geometry=geometry, data_config=data_config, weights=weights,
        weights_sha256=state_sha256(model), heads=model.blocks[-1].attn.num_heads,
        patch_size=patch, dynamic_img_size=bool(getattr(model, "dynamic_img_size", False)),
        notes=notes,
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


# -- capture ---------------------------------------------------------------------------------


class Taps:
    """Forward hooks on the patch embedding and the last block's qkv projection.

    timm's attention is fused (SDPA), so attention weights never exist; the
    [CLS] row is recomputed from the captured qkv output instead. With
    `every_block`, each block's qkv output is reduced to its q/k/v norms as
    it is produced (`qkv_norms`, one (B, 3, T) tensor per block), so no
    block's projection outlives its block.
    """

    def __init__(self, model: torch.nn.Module, *, every_block: bool = False) -> None:
        self.outputs: dict[str, torch.Tensor] = {}
        self.qkv_norms: list[torch.Tensor] = []
        for block in model.blocks if every_block else model.blocks[-1:]:
            if not hasattr(block.attn, "qkv"):
                raise VitregError("a block's attention has no fused qkv projection to tap")
        attn = model.blocks[-1].attn
        self._handles = [
            model.patch_embed.register_forward_hook(self._keep("patch_embed")),
            attn.qkv.register_forward_hook(self._keep("qkv")),
        ]
        if every_block:
            self._handles += [block.attn.qkv.register_forward_hook(self._norms(block.attn))
                              for block in model.blocks]

    def _keep(self, name: str):
        def hook(module: torch.nn.Module, args: Any, output: torch.Tensor) -> None:
            self.outputs[name] = output

        return hook

    def _norms(self, attn: torch.nn.Module):
        def hook(module: torch.nn.Module, args: Any, output: torch.Tensor) -> None:
            self.qkv_norms.append(qkv_norms(*split_qkv(attn, output)))

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def neighbor_cosine(embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Mean cosine similarity of each patch with its 4-neighbours (3 or 2 at edges)."""
    b, d = embed.shape[0], embed.shape[-1]
    x = F.normalize(embed.float().reshape(b, grid[0], grid[1], d), dim=-1)
    total = torch.zeros(b, grid[0], grid[1], device=x.device)
    count = torch.zeros(1, grid[0], grid[1], device=x.device)
    vertical = (x[:, 1:] * x[:, :-1]).sum(-1)
    horizontal = (x[:, :, 1:] * x[:, :, :-1]).sum(-1)
    total[:, 1:] += vertical
    total[:, :-1] += vertical
    total[:, :, 1:] += horizontal
    total[:, :, :-1] += horizontal
    count[:, 1:] += 1
    count[:, :-1] += 1
    count[:, :, 1:] += 1
    count[:, :, :-1] += 1
    return (total / count).reshape(b, -1)


def split_qkv(attn: torch.nn.Module, qkv: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """q, k (after the block's q/k norms) and v, each (B, heads, T, head_dim), float32."""
    b, t, _ = qkv.shape
    qkv = qkv.float().reshape(b, t, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    return attn.q_norm(q), attn.k_norm(k), v


def cls_attention(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """Softmax attention of the [CLS] query to every token, mean over heads: (B, T)."""
    logits = (q[:, :, :1] * scale) @ k.transpose(-2, -1)
    return logits.softmax(dim=-1).mean(dim=1)[:, 0]


def qkv_norms(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B, 3, T) L2 norms of q, k and v per token, heads concatenated."""
    return torch.stack([t.transpose(1, 2).flatten(2).norm(dim=-1) for t in (q, k, v)], dim=1)
