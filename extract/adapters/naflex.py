"""timm's `NaFlexViT` (module `naflexvit`), for square images at one size:
its embedding (`embeds`) patchifies, projects, normalises and then adds the
position embedding; the projection's normalised output feeds the blocks."""

from __future__ import annotations

from torch import nn

from vitreg.extract.adapters.base import Adapter, register_adapter


@register_adapter
class NaFlexAdapter(Adapter):
    family = "naflexvit"
    classes = ("NaFlexVit",)

    def prefix_layout(self) -> tuple[str, ...]:
        cls = 1 if self.model.has_class_token else 0
        return ("cls",) * cls + ("register",) * (self.model.num_prefix_tokens - cls)

    #: the embedding resamples its position embedding to any grid, at every pass
    any_size = True

    def img_size(self) -> int:
        return int(self.model.pretrained_cfg["input_size"][-1])

    def patch_size(self) -> int:
        return int(self.model.embeds.patch_size[0])

    def grid(self) -> tuple[int, int]:
        side = self.img_size() // self.patch_size()
        return side, side

    def embedding_module(self) -> nn.Module:
        return self.model.embeds.norm  # after the projection, before position embeddings
