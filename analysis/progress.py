"""The bar of each analysis: its steps (a store read, a figure drawn) done, steps/s
and time left over the whole analysis (`core.progress`), on stderr.

`vitreg analysis` opens `analysis_progress()`; an analysis opens `analysis_bar(name,
total)` and calls the `advance` it yields after each step. Outside a command (Python
calls, study jobs) the bars are off, so no signature carries a progress flag.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import TypeVar

from vitreg.core.progress import progress_bar

T = TypeVar("T")

_enabled: ContextVar[bool] = ContextVar("vitreg_analysis_progress", default=False)


@contextlib.contextmanager
def analysis_progress(enabled: bool = True) -> Iterator[None]:
    """Show the bar of every analysis run inside the block (none when not `enabled`)."""
    token = _enabled.set(enabled)
    try:
        yield
    finally:
        _enabled.reset(token)


@contextlib.contextmanager
def analysis_bar(name: str, total: int) -> Iterator[Callable[[int], None]]:
    """A bar of `total` steps labelled `analysis NAME`; yields `advance(n)`."""
    with progress_bar(total, label=f"analysis {name}", unit="step",
                      enabled=_enabled.get()) as advance:
        yield advance


def stepped(items: Iterable[T], advance: Callable[[int], None]) -> Iterator[T]:
    """`items`, advancing the bar by one once the caller is done with each."""
    for item in items:
        yield item
        advance(1)
