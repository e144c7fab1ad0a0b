"""What every registry of vitreg (probes, analyses, executors, probe cost models)
does with names: a module-level dict filled by a decorator that refuses a name
taken twice (timm's `register_model`).

A bad registration is a programming error, not a user's: `RegistrationError`
is not a `VitregError`, so the command-line boundary keeps its traceback.
"""

from __future__ import annotations

from typing import TypeVar

from .errors import RegistrationError

V = TypeVar("V")


def add_entry(table: dict[str, V], name: str, entry: V, *, what: str) -> V:
    """Put `entry` in `table` under `name`; a name already there is refused
    (`RegistrationError`)."""
    if name in table:
        raise RegistrationError(f"{what} {name!r} is already registered")
    table[name] = entry
    return entry
