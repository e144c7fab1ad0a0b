"""vitreg's error hierarchy and the one boundary that turns it into a sentence.

Every failure a user can fix is a `VitregError` (zarr's habit: one base class,
each subclass also deriving from the builtin that fits) whose message says
what is wrong and what to do. `cli_errors` wraps every click command: a
`VitregError` becomes `Error: <message>` and exit status 2; anything else is a
bug and keeps its traceback. The sentence is scrubbed first (`core.scrub`):
no credentials of a URL, no control characters from a stranger's store.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .scrub import scrub

F = TypeVar("F", bound=Callable[..., Any])


class VitregError(Exception):
    """Base class of every error vitreg raises on purpose."""


class UsageError(VitregError, ValueError):
    """An option or argument cannot work; nothing has been done yet."""


class InputError(VitregError, ValueError):
    """An input (shard, image, label, store, file) is not what vitreg can use."""


class _CliError(click.ClickException):
    exit_code = 2


def cli_errors(fn: F) -> F:
    """Decorate a click command: `VitregError` -> `Error: ...`, exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except VitregError as exc:
            raise _CliError(scrub(exc)) from exc

    return wrapper  # type: ignore[return-value]
