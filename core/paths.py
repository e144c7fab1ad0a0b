"""Where a command writes, checked against what it reads: no command writes
into or over its own inputs (a results file inside a store folder would become
part of the store; a zip written over an input shard destroys it)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .errors import UsageError


def local_path(url: str | Path) -> Path | None:
    """The resolved local path of a path or `file://` URL; None for other URLs."""
    text = str(url)
    if text.startswith("file://"):
        text = text.removeprefix("file://")
    elif "://" in text or text.startswith("pipe:"):
        return None
    return Path(text).expanduser().resolve()


def check_not_inside(out: str | Path, inputs: Iterable[str | Path | None], *,
                     flag: str = "--out") -> None:
    """Refuse `out` when it is one of `inputs` or lies inside one (a store folder)."""
    target = local_path(out)
    if target is None:
        return
    for source in inputs:
        where = local_path(source) if source is not None else None
        if where is None:
            continue
        if target == where:
            raise UsageError(f"{flag} {out} is the input {source}: vitreg never writes over "
                             "what it reads; give another path")
        if where in target.parents:
            raise UsageError(f"{flag} {out} lies inside the input {source}: vitreg never "
                             "writes into what it reads; give a path outside it")
