"""The extraction's bar: images done, images/s and time left over the whole run."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from vitreg.core.progress import progress_bar as _bar


@contextlib.contextmanager
def progress_bar(total: int, *, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    with _bar(total, label="extract", unit="img", enabled=enabled) as advance:
        yield advance
