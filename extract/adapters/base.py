"""The adapter contract, its registry, and the behaviour every family shares.

An adapter answers, for one built timm model, everything vitreg reads from
it: the prefix layout, the patch grid, the embedding that feeds the blocks,
each block's output before the final norm, the [CLS] (or pooling-query)
attention of a block exactly as timm computes it, per-block q/k/v norms, and
the pooled outputs. The defaults below are timm's `VisionTransformer`; a
family overrides what differs.

Exact attention: timm's attention modules run fused SDPA, so the softmax
never exists. On each tapped block (only those) the adapter switches the
module to timm's own unfused path (`fused_attn = False`) and hooks its
`attn_drop`, whose input is the softmax after every term timm adds (q/k
norms, rotary embeddings, relative position bias, masks). The hook keeps the
[CLS] row, mean over heads, (B, T); the (B, heads, T, T) matrix is timm's own
and is freed when the block returns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vitreg.cache import VitregError
from vitreg.core.registry import RegistryError


class UnsupportedModelError(VitregError, ValueError):
    """vitreg cannot read this model exactly; the message says why in one sentence."""


#: family name -> adapter class, filled by `register_adapter`
ADAPTERS: dict[str, type[Adapter]] = {}
#: timm model class name -> family name
_BY_CLASS: dict[str, str] = {}

#: Attention modules whose unfused path passes the softmax through `attn_drop`
#: and nothing else (checked per family by tests/test_extract/test_adapters.py).
EXACT_ATTENTION = frozenset({
    "Attention", "AttentionRope", "EvaAttention", "RelPosAttention", "ClassAttn",
    "ParallelScalingBlock",
})

#: What a prefix token may be.
PREFIX_KINDS = ("cls", "register", "distillation")

Hook = Callable[[torch.Tensor], None]


def register_adapter(cls: type[Adapter]) -> type[Adapter]:
    """Register `cls` for its family and timm model classes; refuses duplicates."""
    if cls.family in ADAPTERS:
        raise RegistryError(f"adapter family {cls.family!r} registered twice")
    taken = [name for name in cls.classes if name in _BY_CLASS]
    if taken:
        raise RegistryError(f"timm classes {taken} already have an adapter")
    ADAPTERS[cls.family] = cls
    _BY_CLASS.update(dict.fromkeys(cls.classes, cls.family))
    return cls


def has_adapter(model: nn.Module) -> bool:
    """Whether `model`'s timm class belongs to a family vitreg has an adapter for."""
    return type(model).__name__ in _BY_CLASS


def adapter_for(model: nn.Module) -> Adapter:
    """The adapter of `model`'s family; UnsupportedModelError if there is none
    or if the adapter cannot read this member exactly."""
    family = _BY_CLASS.get(type(model).__name__)
    if family is None:
        raise UnsupportedModelError(
            f"vitreg has no adapter for timm's {type(model).__name__} "
            f"(families: {', '.join(sorted(ADAPTERS))})")
    adapter = ADAPTERS[family](model)
    reason = adapter.refusal()
    if reason:
        raise UnsupportedModelError(reason)
    return adapter


class Adapter:
    """timm's `VisionTransformer`, and the defaults of every family."""

    family: ClassVar[str] = ""
    classes: ClassVar[tuple[str, ...]] = ()
    #: True for a model built once that runs at any size (it resamples its
    #: position embedding at every pass); False: built at the size it runs
    any_size: ClassVar[bool] = False

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    # -- what the model is (no forward pass; works on a meta-device build) -----

    def refusal(self) -> str | None:
        """Why vitreg cannot read this model exactly, or None."""
        for i in range(self.depth()):
            reason = attention_refusal(self.attention_module(i))
            if reason:
                return f"block {i}: {reason}"
        if self.query() is None and not self.pooled_by_mean():
            return (f"{type(self.model).__name__} with global_pool="
                    f"{getattr(self.model, 'global_pool', None)!r} has no [CLS] token and no "
                    "pooling head: vitreg has no query attention nor pooled output to store")
        return None

    def prefix_layout(self) -> tuple[str, ...]:
        """What each prefix token is, in timm's order ([CLS] first, then registers)."""
        cls = 1 if getattr(self.model, "cls_token", None) is not None else 0
        return ("cls",) * cls + ("register",) * (self.model.num_prefix_tokens - cls)

    def grid(self) -> tuple[int, int]:
        """The patch grid the blocks see (for a hybrid, the stem's output grid)."""
        grid = self.model.patch_embed.grid_size
        return int(grid[0]), int(grid[1])

    def img_size(self) -> int:
        return int(self.model.patch_embed.img_size[0])

    def patch_size(self) -> int:
        """Pixels per patch: the embedding's stride (a hybrid's stem included)."""
        return self.img_size() // self.grid()[0]

    def size_step(self) -> int:
        """Image sizes the model can be built at are multiples of this."""
        return self.patch_size()

    def dim(self) -> int:
        return int(self.model.embed_dim)

    def heads(self) -> int:
        return int(self.attention_module(self.depth() - 1).num_heads)

    def blocks(self) -> Sequence[nn.Module]:
        """The blocks whose outputs `--blocks` and `--with blocks` index."""
        return self.model.blocks

    def depth(self) -> int:
        return len(self.blocks())

    def attention_module(self, index: int) -> nn.Module:
        """The module whose unfused path gives block `index`'s attention."""
        block = self.blocks()[index]
        return getattr(block, "attn", block)

    def query(self) -> str | None:
        """Whose attention `attention` stores: `cls` (the last block's [CLS]
        query), `map` (the pooling head's learned query), or None."""
        if "cls" in self.prefix_layout():
            return "cls"
        if getattr(self.model, "attn_pool", None) is not None:
            return "map"
        return None

    def pooled_by_mean(self) -> bool:
        return getattr(self.model, "global_pool", None) in ("avg", "avgmax", "max")

    def refuse_option(self, option: str) -> str | None:
        """Why an optional quantity (`qkv`, `blocks`, `blocks_qkv`) cannot be
        stored for this model, or None."""
        if option in ("qkv", "blocks_qkv"):
            for i in range(self.depth()):
                attn = self.attention_module(i)
                if not (_has(attn, "qkv") or _has(attn, "q_proj")):
                    return (f"block {i}'s attention ({type(attn).__name__}) has no q/k/v "
                            "projection to read the q/k/v norms from")
        return None

    # -- one forward pass ------------------------------------------------------

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) tokens after the final norm (timm's `forward_features`)."""
        return self.model.forward_features(x)

    def pooled(self, final: torch.Tensor) -> torch.Tensor:
        """(B, D) the model's own pooled output (its `forward_head(pre_logits=True)`)."""
        return self.model.forward_head(final, pre_logits=True)

    def embedding_module(self) -> nn.Module:
        """The module whose output is the patch embedding, before position embeddings."""
        return self.model.patch_embed

    def hook_embedding(self, fn: Hook) -> list[Any]:
        """Call `fn` with the (B, P, D) patch embedding of each pass."""
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            fn(output.reshape(output.shape[0], -1, output.shape[-1]))

        return [self.embedding_module().register_forward_hook(hook)]

    def hook_block(self, index: int, fn: Hook) -> list[Any]:
        """Call `fn` with block `index`'s (B, T, D) output, before the final norm."""
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            fn(output)

        return [self.blocks()[index].register_forward_hook(hook)]

    def hook_attention(self, index: int, fn: Hook) -> list[Any]:
        """Call `fn` with block `index`'s softmax attention of query 0 ([CLS]),
        mean over heads, (B, T): timm's unfused path, read at `attn_drop`."""
        attn = self.attention_module(index)

        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            fn(output[:, :, 0].float().mean(dim=1))

        return [Unfused(attn), attn.attn_drop.register_forward_hook(hook)]

    def hook_query(self, fn: Hook) -> list[Any]:
        """Call `fn` with the pooling head's query attention, (B, T)."""
        pool = self.model.attn_pool

        def hook(module: nn.Module, args: Any) -> None:
            fn(latent_attention(module, args[0]))

        return [pool.register_forward_pre_hook(hook)]

    def hook_qkv(self, index: int, fn: Hook) -> list[Any]:
        """Call `fn` with block `index`'s (B, 3, T) q/k/v norms (heads
        concatenated; q and k after the block's q/k norms)."""
        attn = self.attention_module(index)

        def hook(module: nn.Module, args: Any) -> None:
            fn(qkv_norms(*project_qkv(module, args[0])))

        return [attn.register_forward_pre_hook(hook)]


class Unfused:
    """Switches one attention module to timm's unfused path until `remove()`."""

    def __init__(self, attn: nn.Module) -> None:
        self.attn, self.was = attn, attn.fused_attn
        attn.fused_attn = False

    def remove(self) -> None:
        self.attn.fused_attn = self.was


def _has(module: nn.Module, name: str) -> bool:
    return getattr(module, name, None) is not None


def attention_refusal(attn: nn.Module) -> str | None:
    """Why the softmax of `attn` cannot be read at its `attn_drop`, or None."""
    name = type(attn).__name__
    if name not in EXACT_ATTENTION or not hasattr(attn, "attn_drop"):
        return (f"its attention ({name}) is not one whose softmax vitreg reads exactly "
                f"(known: {', '.join(sorted(EXACT_ATTENTION))})")
    if getattr(attn, "num_kv_groups", 1) != 1:
        return f"grouped-query attention ({name} with {attn.num_kv_groups} groups)"
    return None


def latent_attention(pool: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Softmax attention of an `AttentionPoolLatent`'s first query to each of
    the N tokens it pools, mean over heads, (B, N): the module's own unfused
    path (timm's `attention_pool.py`), step for step, without a mask."""
    b, n, _ = x.shape
    if pool.pos_embed is not None:
        x = x + pool.pos_embed.unsqueeze(0).to(x.dtype)
    q = pool.q(pool.latent.expand(b, -1, -1))
    q = q.reshape(b, pool.latent_len, pool.num_heads, pool.head_dim).transpose(1, 2)
    k = pool.kv(x).reshape(b, n, 2, pool.num_heads, pool.head_dim).permute(2, 0, 3, 1, 4)[0]
    q, k = pool.q_norm(q), pool.k_norm(k)
    attn = ((q * pool.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
    return attn[:, :, 0].float().mean(dim=1)


def project_qkv(attn: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """q, k (after the module's q/k norms, if any) and v of `attn`'s input `x`,
    each (B, heads, T, head_dim), float32: the projection as timm's attention
    modules compute it (a fused `qkv`, with EVA/BEiT's separate q/v biases,
    or separate q/k/v projections)."""
    b, t, _ = x.shape
    if _has(attn, "qkv"):
        qkv = F.linear(x, attn.qkv.weight, attn.qkv.bias)
        if _has(attn, "q_bias"):
            k_bias = attn.k_bias if _has(attn, "k_bias") else torch.zeros_like(attn.v_bias)
            qkv = qkv + torch.cat((attn.q_bias, k_bias, attn.v_bias)).to(qkv.dtype)
        q, k, v = qkv.float().reshape(b, t, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    else:
        q, k, v = (proj(x).float().reshape(b, t, attn.num_heads, -1).transpose(1, 2)
                   for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
    q_norm, k_norm = getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)
    return (q_norm(q) if q_norm is not None else q), (k_norm(k) if k_norm is not None else k), v


def qkv_norms(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B, 3, T) L2 norms of q, k and v per token, heads concatenated."""
    return torch.stack([t.transpose(1, 2).flatten(2).norm(dim=-1) for t in (q, k, v)], dim=1)
