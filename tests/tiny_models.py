"""Tiny random-init versions of the study's model families, registered in timm.

Each keeps its family's real configuration (registers, LayerScale, class
token handling, pre-norm) and only shrinks width, depth and image size.
Random-init LayerScale (1e-5) makes blocks near identity and random q/k give
near-uniform attention, which would hide a wrong block: both are enlarged.
"""

from __future__ import annotations

import timm
import torch
from timm.models import register_model

SMALL = {"embed_dim": 48, "depth": 3, "num_heads": 3}

#: registered name -> (real timm name it shrinks, native image size)
FAMILIES = {
    "tiny_dino": ("vit_small_patch16_224.dino", 64),
    "tiny_dinov2": ("vit_small_patch14_dinov2.lvd142m", 56),
    "tiny_dinov2_reg4": ("vit_small_patch14_reg4_dinov2.lvd142m", 56),
    "tiny_deit3": ("deit3_medium_patch16_224.fb_in22k_ft_in1k", 64),
    "tiny_openclip": ("vit_base_patch16_clip_224.laion2b", 64),
}


def _sharpen(model: torch.nn.Module) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for block in model.blocks:
            for ls in (getattr(block, "ls1", None), getattr(block, "ls2", None)):
                if ls is not None and hasattr(ls, "gamma"):
                    ls.gamma.copy_(0.5 + torch.rand(ls.gamma.shape, generator=generator))
            qkv = block.attn.qkv.weight
            dim = qkv.shape[1]
            qkv[: 2 * dim] *= 4.0  # q and k rows: sharper attention
        if getattr(model, "cls_token", None) is not None:
            model.cls_token.normal_(0, 1, generator=generator)
        if getattr(model, "reg_token", None) is not None:
            model.reg_token.normal_(0, 1, generator=generator)
    return model


def _factory(real: str, size: int):
    def build(pretrained: bool = False, **kwargs):
        kwargs = {**SMALL, "img_size": size, **kwargs}
        return _sharpen(timm.create_model(real, pretrained=False, **kwargs))

    return build


def register_all(families: dict[str, tuple[str, int]], factory) -> None:
    """Register `factory(real, size)` in timm under each name of `families`, once."""
    for name, (real, size) in families.items():
        if name not in timm.list_models(name):
            build = factory(real, size)
            build.__name__ = name
            build.__module__ = factory.__module__
            register_model(build)


register_all(FAMILIES, _factory)


@register_model
def tiny_dino_loud(pretrained: bool = False, **kwargs):
    """tiny_dino whose last block outputs values far beyond float16's range."""
    model = _factory(*FAMILIES["tiny_dino"])(**kwargs)
    with torch.no_grad():
        model.blocks[-1].mlp.fc2.weight.mul_(1e7)
    return model


@register_model
def tiny_dino_nan(pretrained: bool = False, **kwargs):
    """tiny_dino that outputs NaN for images whose input is all black."""
    model = _factory(*FAMILIES["tiny_dino"])(**kwargs)

    def poison(module, args, output):
        black = args[0].flatten(2).std(dim=-1).amax(dim=-1) < 1e-6  # a constant image
        return torch.where(black.view(-1, *[1] * (output.dim() - 1)), torch.nan, output)

    model.patch_embed.register_forward_hook(poison)
    return model
