"""What every registry of vitreg (probes, analyses, executors, probe cost models,
stored arrays, captures, model adapters) does with names: a module-level dict
filled by a decorator that refuses a name taken twice (timm's `register_model`).

A registration that cannot work is a programming error, not a user's:
`RegistryError` is not a `VitregError`, so the command-line boundary keeps its
traceback.
"""

from __future__ import annotations

from typing import TypeVar

V = TypeVar("V")


class RegistryError(Exception):
    """A registry used wrongly: a name registered twice, an entry that contradicts
    itself. Raised at import time, by the code that registers."""


def add_entry(table: dict[str, V], name: str, entry: V, *, what: str) -> V:
    """Put `entry` in `table` under `name`; a name already there is refused."""
    if name in table:
        raise RegistryError(f"{what} {name!r} is already registered")
    table[name] = entry
    return entry
