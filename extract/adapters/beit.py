"""timm's `Beit` (module `beit`): a relative position bias is added to the
logits inside its attention, before the softmax that `attn_drop` sees."""

from __future__ import annotations

from vitreg.extract.adapters.base import Adapter, register_adapter


@register_adapter
class BeitAdapter(Adapter):
    family = "beit"
    classes = ("Beit",)
