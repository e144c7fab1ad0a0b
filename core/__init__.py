"""Stage-free helpers that every stage may import: errors and the CLI error boundary.

Nothing here imports a stage (`cache`, `extract`, `probe`, `analysis`) or the
command-line face (`vitreg`).
"""

from __future__ import annotations

from .errors import InputError, UsageError, VitregError, cli_errors
from .registry import RegistryError

__all__ = ["InputError", "RegistryError", "UsageError", "VitregError", "cli_errors"]
