"""timm's `VisionTransformerRelPos` (module `vision_transformer_relpos`):
most members have no [CLS] and pool by mean (`attention` is then absent)."""

from __future__ import annotations

from vitreg.extract.adapters.base import Adapter, register_adapter


@register_adapter
class RelPosAdapter(Adapter):
    family = "vision_transformer_relpos"
    classes = ("VisionTransformerRelPos",)
