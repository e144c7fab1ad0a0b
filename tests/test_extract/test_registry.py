"""Every stored quantity is declared once in cache/schema.py and captured once in extract."""

from __future__ import annotations

from vitreg.cache import ARRAYS, ROW_META
from vitreg.extract.capture import CAPTURES


def test_every_array_has_one_capture():
    assert set(CAPTURES) | set(ROW_META) == set(ARRAYS)
    assert not set(CAPTURES) & set(ROW_META)
