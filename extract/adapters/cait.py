"""timm's `Cait` (module `cait`): self-attention blocks over the patches, then
class-attention blocks in which only [CLS] attends. `tokens` are [CLS] after
the last class-attention block and the patches after the last self-attention
block (timm's `forward_features` before its norm); `attention` is the last
class-attention block's [CLS] query over [CLS] and the patches."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vitreg.extract.adapters.base import Adapter, Hook, attention_refusal, register_adapter


@register_adapter
class CaitAdapter(Adapter):
    family = "cait"
    classes = ("Cait",)

    def prefix_layout(self) -> tuple[str, ...]:
        return ("cls",)

    def refusal(self) -> str | None:
        for i, block in enumerate(self.model.blocks_token_only):
            reason = attention_refusal(block.attn)
            if reason:
                return f"class-attention block {i}: {reason}"
        return None

    def attention_module(self, index: int) -> nn.Module:
        return self.model.blocks_token_only[-1].attn

    def refuse_option(self, option: str) -> str | None:
        if option in ("qkv", "blocks_qkv", "blocks"):
            return ("CaiT's self-attention blocks carry no [CLS] and its talking-heads "
                    "attention has no q/k/v projection of the store's tokens: only the last "
                    "block's tokens and attention are stored")
        return None

    def hook_block(self, index: int, fn: Hook) -> list[Any]:
        if index != self.depth() - 1:
            raise ValueError(self.refuse_option("blocks"))
        held: dict[str, torch.Tensor] = {}

        def patches(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            held["patches"] = output

        def cls(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            fn(torch.cat([output, held.pop("patches")], dim=1))

        return [self.model.blocks[-1].register_forward_hook(patches),
                self.model.blocks_token_only[-1].register_forward_hook(cls)]
