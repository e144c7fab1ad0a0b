"""Kept for callers of `vitreg.runtime`: the settings live in `vitreg.core.runtime`."""

from __future__ import annotations

from vitreg.core.runtime import tune_allocator

__all__ = ["tune_allocator"]
