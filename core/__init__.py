"""Stage-free helpers that every stage may import: the error hierarchy, checked
numbers, files, checkpoints, devices, progress.

Nothing here imports a stage (`cache`, `extract`, `probe`, `analysis`,
`study`), the command-line face (`vitreg`) or click (`tests/test_imports.py`).
"""

from __future__ import annotations

from .errors import InputError, UsageError, VitregError

__all__ = ["InputError", "UsageError", "VitregError"]
