"""timm's `Eva` (module `eva`): EVA-02, DINOv3, PE, the `vit_*_rope_*` models.
Rotary embeddings are applied inside `EvaAttention`, before its softmax, so
the attention read at `attn_drop` includes them."""

from __future__ import annotations

from vitreg.extract.adapters.base import Adapter, register_adapter


@register_adapter
class EvaAdapter(Adapter):
    family = "eva"
    classes = ("Eva",)
