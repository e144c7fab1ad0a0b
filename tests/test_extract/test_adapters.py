"""Every family's adapter gives exactly what timm computes.

One small member per family, random weights made telling (LayerScale raised
to 0.5-1.5, q/k projections x4: random init makes blocks near identity and
attention near uniform, which would hide a wrong block). The reference is
timm's own model with every attention module on its unfused path
(`fused_attn = False`): block outputs from `forward_intermediates` (CaiT: its
`forward_cls`), the softmax read at the tapped module's `attn_drop` (for a
pooling head, the `softmax` call itself, caught by a TorchFunctionMode), q/k
from the modules' `q_norm`/`k_norm` outputs and v from the q/k/v projection's
output, caught the same way; norms, means and neighbour cosines in float64.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from tests.test_extract.test_values import TOLERANCE, neighbor_cos_numpy
from vitreg.core.errors import UsageError
from vitreg.core.registry import RegistryError
from vitreg.extract.adapters import ADAPTERS, Adapter, UnsupportedModelError, adapter_for
from vitreg.extract.adapters.base import register_adapter
from vitreg.extract.capture import Capture
from vitreg.extract.model import LoadedModel, adapter_geometry

SMALL = {"embed_dim": 48, "depth": 2, "num_heads": 3}

#: family member -> (extra build arguments, image size, what `attention` holds)
MEMBERS = {
    "vit_small_patch14_reg4_dinov2": ({}, 56, "cls"),
    "vit_base_patch16_clip_224": ({}, 64, "cls"),
    "vit_base_patch16_siglip_224": ({}, 64, "map"),
    "vit_base_patch16_xp_224": ({}, 64, "cls"),  # ParallelScalingBlock
    "vit_pwee_patch16_reg1_gap_256": ({}, 64, None),  # registers, no [CLS]
    "vit_base_patch16_rpn_224": ({}, 64, None),  # ResPostBlock
    "vit_small_patch16_rope_224": ({}, 64, "cls"),
    "vit_small_patch16_dinov3": ({}, 64, "cls"),
    "eva02_tiny_patch14_224": ({}, 56, "cls"),
    "vit_pe_core_tiny_patch16_384": ({}, 64, "cls"),
    "deit_tiny_distilled_patch16_224": ({}, 64, "cls"),
    "beit_base_patch16_224": ({}, 64, "cls"),
    "vit_relpos_small_patch16_224": ({}, 64, None),
    "vit_relpos_medium_patch16_cls_224": ({}, 64, "cls"),
    "vit_small_r26_s32_224": ({}, 128, "cls"),
    "cait_xxs24_224": ({"depth_token_only": 2}, 64, "cls"),
    "naflexvit_base_patch16_gap": ({}, 64, None),
    "naflexvit_base_patch16_map": ({}, 64, "map"),
}


def sharpen(model: torch.nn.Module) -> torch.nn.Module:
    """LayerScale to 0.5-1.5, q and k projections x4, prefix tokens ~ N(0, 1)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.split(".")[-1] in ("gamma", "gamma_1", "gamma_2"):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            if name.split(".")[-1] in ("cls_token", "reg_token", "dist_token"):
                p.normal_(0, 1, generator=g)
        for module in model.modules():
            qkv = getattr(module, "qkv", None)
            if isinstance(qkv, torch.nn.Linear):
                qkv.weight[: 2 * qkv.weight.shape[0] // 3] *= 4.0
            for name in ("q_proj", "k_proj", "q"):
                if isinstance(getattr(module, name, None), torch.nn.Linear):
                    getattr(module, name).weight.mul_(4.0)
            kv = getattr(module, "kv", None)
            if isinstance(kv, torch.nn.Linear):
                kv.weight[: kv.weight.shape[0] // 2] *= 4.0
    return model


def build(name: str) -> tuple[torch.nn.Module, int]:
    extra, size, _ = MEMBERS[name]
    torch.manual_seed(42)
    model = timm.create_model(name, pretrained=False, num_classes=0, img_size=size,
                              **{**SMALL, **extra})
    return sharpen(model).eval(), size


class Catch(TorchFunctionMode):
    """Keeps the output of every `softmax` and `F.linear` call."""

    def __init__(self) -> None:
        super().__init__()
        self.softmax: list[torch.Tensor] = []
        self.linear: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in (torch.Tensor.softmax, torch.softmax, F.softmax):
            self.softmax.append(out)
        if func is F.linear:
            self.linear.append((kwargs.get("weight") if kwargs and "weight" in kwargs
                                else args[1], out))
        return out


def attention_of(block: torch.nn.Module) -> torch.nn.Module:
    return getattr(block, "attn", block)


def reference(model: torch.nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    """timm's own computation, every attention unfused; see the module docstring."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    cait = hasattr(model, "blocks_token_only")
    last = model.blocks_token_only[-1].attn if cait else attention_of(model.blocks[-1])
    seen: dict[str, list] = {"attn": [], "q": [], "k": [], "embed": []}
    hooks = [last.attn_drop.register_forward_hook(lambda m, a, o: seen["attn"].append(a[0]))]
    if hasattr(last, "q_norm"):
        hooks += [last.q_norm.register_forward_hook(lambda m, a, o: seen["q"].append(o)),
                  last.k_norm.register_forward_hook(lambda m, a, o: seen["k"].append(o))]
    embed = model.embeds.norm if hasattr(model, "embeds") else model.patch_embed
    hooks.append(embed.register_forward_hook(lambda m, a, o: seen["embed"].append(o)))
    catch = Catch()
    with torch.no_grad(), catch:
        if cait:
            patches = model.blocks(model.pos_drop(model.patch_embed(x) + model.pos_embed))
            tokens = model.forward_cls(patches)
            final = model.norm(tokens)
        else:
            with_prefix = model.num_prefix_tokens > 0  # timm refuses it without prefix tokens
            final, inter = model.forward_intermediates(
                x, indices=[len(model.blocks) - 1], norm=False, output_fmt="NLC",
                return_prefix_tokens=with_prefix)
            tokens = torch.cat(inter[-1][::-1], dim=1) if with_prefix else inter[-1]
        head_from = len(catch.softmax)
        pooled = model.forward_head(final, pre_logits=True)
    for hook in hooks:
        hook.remove()
    out = {"tokens": tokens.double().numpy(), "final": final.double().numpy(),
           "pooled": pooled.double().numpy(), "embed": seen["embed"][0].double()}
    if getattr(model, "attn_pool", None) is not None:
        out["map"] = catch.softmax[head_from][:, :, 0].double().mean(1).numpy()
    if seen["attn"]:
        out["cls"] = seen["attn"][0][:, :, 0].double().mean(1).numpy()
    if getattr(last, "qkv", None) is not None:
        out["qkv"] = qkv_reference(last, catch, seen)
    return out


def qkv_reference(attn: torch.nn.Module, catch: Catch, seen: dict) -> np.ndarray:
    """(B, 3, T) q/k/v norms: q, k from the module's q_norm/k_norm outputs (or,
    with none, from its projection output), v from its projection output."""
    weight = attn.qkv.weight
    qkv = next(out for w, out in catch.linear if w is weight).double()
    b, t, _ = qkv.shape
    q, k, v = qkv.reshape(b, t, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    if seen["q"]:
        q, k = seen["q"][0].double(), seen["k"][0].double()
    return np.stack([z.transpose(1, 2).reshape(b, t, -1).norm(dim=-1).numpy()
                     for z in (q, k, v)], axis=1)


def captured(model: torch.nn.Module, size: int, images: torch.Tensor, with_options=()):
    adapter = adapter_for(model)
    loaded = LoadedModel(
        model=model, geometry=adapter_geometry(adapter, size),
        data_config={"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}, weights="random",
        weights_sha256="", heads=adapter.heads(), patch_size=adapter.patch_size(),
        dynamic_img_size=False, adapter=adapter)
    capture = Capture(loaded, device=torch.device("cpu"), precision="fp32",
                      with_options=with_options)
    out = capture(images, np.arange(len(images)))
    return {k: v.double().numpy() for k, v in out.items()}, loaded.geometry


def close(name: str, got: np.ndarray, want: np.ndarray) -> None:
    rtol, atol = TOLERANCE[name]
    # the store keeps float16 where the schema says so: compare at that precision
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=name)


def images(size: int, n: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(42)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("name", sorted(MEMBERS))
def test_every_array_is_timms_own(name):
    model, size = build(name)
    batch = images(size)
    x = (batch.float() / 255 - 0.5) / 0.25
    want = reference(model, x)
    options = () if adapter_for(model).refuse_option("qkv") else ("qkv",)
    got, geom = captured(model, size, batch, options)
    query = MEMBERS[name][2]
    assert adapter_for(model).query() == query
    close("tokens", got["tokens"], want["tokens"])
    close("norms", got["norms"], np.linalg.norm(want["tokens"], axis=-1))
    final = want["final"]
    close("pooled/cls", got["pooled/cls"], final[:, 0] if geom.has_cls else want["pooled"])
    close("pooled/patch_mean", got["pooled/patch_mean"], final[:, geom.prefix:].mean(1))
    close("pooled/registers", got["pooled/registers"], final[:, geom.register_slice])
    embed = want["embed"].reshape(len(batch), *geom.grid, -1).numpy()
    close("neighbor_cos", got["neighbor_cos"], neighbor_cos_numpy(embed))
    if query is None:
        assert "attention" not in got
    else:
        attention = want[query]
        attention = np.pad(attention, ((0, 0), (geom.tokens - attention.shape[1], 0)))
        close("attention", got["attention"], attention)
        assert attention.std() > 1e-3  # the sharpened model does not attend uniformly
    if "qkv" in options:
        close("qkv_norms", got["qkv_norms"], want["qkv"])


def test_prefix_layouts_name_each_token():
    expect = {
        "vit_small_patch14_reg4_dinov2": ("cls",) + ("register",) * 4,
        "vit_small_patch16_dinov3": ("cls",) + ("register",) * 4,
        "deit_tiny_distilled_patch16_224": ("cls", "distillation"),
        "vit_base_patch16_siglip_224": (),
        "vit_relpos_small_patch16_224": (),
    }
    for name, layout in expect.items():
        model = timm.create_model(name, pretrained=False, num_classes=0, device="meta")
        assert adapter_for(model).prefix_layout() == layout, name


def test_hybrid_grid_is_the_stems():
    model = timm.create_model("vit_small_r26_s32_224", pretrained=False, num_classes=0,
                              device="meta")
    adapter = adapter_for(model)
    assert adapter.grid() == (7, 7) and adapter.patch_size() == 32


def test_cait_refuses_per_block_options():
    model = timm.create_model("cait_xxs24_224", pretrained=False, num_classes=0, device="meta")
    adapter = adapter_for(model)
    loaded = LoadedModel(model=model, geometry=adapter_geometry(adapter, 224),
                         data_config={"mean": (0, 0, 0), "std": (1, 1, 1)}, weights="random",
                         weights_sha256="", heads=4, patch_size=16, dynamic_img_size=False,
                         adapter=adapter)
    with pytest.raises(UsageError, match="--with blocks is not available.*CaiT"):
        Capture(loaded, device=torch.device("meta"), precision="fp32", with_options=["blocks"])


def test_an_unknown_model_class_is_refused_in_one_sentence():
    with pytest.raises(UnsupportedModelError, match="no adapter for timm's Linear"):
        adapter_for(torch.nn.Linear(2, 2))


def test_registry_refuses_duplicates():
    with pytest.raises(RegistryError, match="registered twice"):
        register_adapter(type("Again", (Adapter,), {"family": "eva", "classes": ("X",)}))
    with pytest.raises(RegistryError, match="already have an adapter"):
        register_adapter(type("Again", (Adapter,), {"family": "new", "classes": ("Eva",)}))
    assert "new" not in ADAPTERS


def test_only_the_tapped_block_runs_unfused():
    model, size = build("vit_small_patch16_dinov3")
    captured(model, size, images(size, 1))
    assert [b.attn.fused_attn for b in model.blocks] == [True, False]


#: one architecture per kind of block and attention the families hold (bench/bench_families.py
#: walks all 303): None = read exactly, else words of the sentence that refuses it
KINDS = {
    "vit_small_patch16_18x2_224": "parallel attention branches",
    "vit_dwee_patch16_reg1_gap_256": "DiffAttention",
    "vit_dpwee_patch16_reg1_gap_256": "DiffParallelScalingBlock",
    "vit_base_patch16_xp_224": None,
    "vit_base_patch16_rpn_224": None,
    "vit_base_patch16_clip_quickgelu_224": None,
    "eva02_small_patch14_224": None,
    "beitv2_base_patch16_224": None,
    "cait_xxs24_224": None,
    "naflexvit_base_patch16_siglip": None,
    "vit_relpos_base_patch16_clsgap_224": None,
}


@pytest.mark.parametrize("name", sorted(KINDS))
def test_each_kind_is_exact_or_refused_before_any_work(name):
    from vitreg.extract.checks import check_model

    words = KINDS[name]
    if words is None:
        check_model(name, None)
        return
    with pytest.raises(UsageError, match="cannot read it exactly") as info:
        check_model(name, None)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_a_model_of_no_family_is_not_a_vision_transformer():
    from vitreg.extract.checks import check_model

    with pytest.raises(UsageError, match="not a Vision Transformer vitreg reads"):
        check_model("resnet18", None)
