"""How vitreg reads each family of timm models: one adapter per family,
registered like timm's `register_model`, looked up by the model's class.

`capture.py` and `model.py` read a model only through its adapter; adding a
family is adding one module here that registers an `Adapter` subclass.
"""

from __future__ import annotations

from vitreg.extract.adapters import beit, cait, eva, naflex, relpos, vit  # noqa: F401, E402
from vitreg.extract.adapters.base import (
    ADAPTERS,
    Adapter,
    UnsupportedModelError,
    adapter_for,
    has_adapter,
    register_adapter,
)

__all__ = ["ADAPTERS", "Adapter", "UnsupportedModelError", "adapter_for", "has_adapter",
           "register_adapter"]
