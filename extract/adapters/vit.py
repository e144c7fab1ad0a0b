"""timm's `VisionTransformer` (modules `vision_transformer`, `vision_transformer_hybrid`:
registers, CLIP, SigLIP, gap and MAP pooling, hybrid stems) and DeiT's distilled variant."""

from __future__ import annotations

from vitreg.extract.adapters.base import Adapter, register_adapter


@register_adapter
class VisionTransformerAdapter(Adapter):
    """The defaults: a hybrid differs only by its stem, whose output grid
    `patch_embed.grid_size` gives."""

    family = "vision_transformer"
    classes = ("VisionTransformer",)

    def refusal(self) -> str | None:
        blocks = self.blocks()
        parallel = [type(b).__name__ for b in blocks if hasattr(b, "attns")]
        if parallel:
            return (f"its blocks ({parallel[0]}) run parallel attention branches, "
                    "so there is no single attention to store")
        return super().refusal()


@register_adapter
class DistilledAdapter(Adapter):
    """DeiT's distilled models: [CLS], then a distillation token (not a register)."""

    family = "deit"
    classes = ("VisionTransformerDistilled",)

    def prefix_layout(self) -> tuple[str, ...]:
        return ("cls", "distillation")
