"""The command-line boundary: where vitreg's errors become a sentence and an
exit status, and the click types every command shares.

`core` knows no click; every stage's click command goes through `cli_errors`,
so a command ends in one of three ways: normally (status 0), with a
`VitregError` printed as `Error: <message>` and its `exit_code` (2 for a
refusal, 1 for a run that ended in failure, 130 for Ctrl-C), or with any
other exception, a bug, printed with its traceback. The sentence is scrubbed
first (`core.scrub`): no credentials of a URL, no control characters from a
stranger's store. Stages may import this module; it imports only `core`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from vitreg.core.errors import VitregError
from vitreg.core.numbers import Range, as_number
from vitreg.core.options import Option
from vitreg.core.scrub import scrub

F = TypeVar("F", bound=Callable[..., Any])


class _CliError(click.ClickException):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def cli_errors(fn: F) -> F:
    """Decorate a click command: a `VitregError` -> `Error: ...`, its `exit_code`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except VitregError as exc:
            raise _CliError(scrub(exc), exc.exit_code) from exc

    wrapper.through_boundary = True  # type: ignore[attr-defined]  (tests/test_boundary.py)
    return wrapper  # type: ignore[return-value]


class InOrderGroup(click.Group):
    """A click group that lists its commands in the order they were added (the
    order a user runs them), not alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


class Number(click.ParamType):
    """A click type for an int or float in `range`; refuses NaN and infinities."""

    def __init__(self, range: Range) -> None:  # noqa: A002
        self.range = range
        self.name = "integer" if range.integer else "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        why = self.range.problem(value)
        if why is not None:
            self.fail(f"{value!r}: {why}", param, ctx)
        return as_number(value, self.range)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "INTEGER" if self.range.integer else "FLOAT"


class LiveChoice(click.Choice):
    """A choice among a registry's names as they are when the command runs (a
    plugin's registration is offered too), not when the option was declared."""

    def __init__(self, table: Mapping[str, Any]) -> None:  # no super(): `choices` is live
        self.table = table
        self.case_sensitive = True

    @property  # type: ignore[override]
    def choices(self) -> tuple[str, ...]:
        return tuple(self.table)


def click_option(opt: Option) -> click.Option:
    """An option record (`core.options.Option`) as a click option: `--flag/--no-flag`
    for a yes/no, a repeatable flag for a list, a checked number for a range, a
    choice for choices. Probes and analyses build their flags with it."""
    flag = opt.flag
    if opt.value_type is bool:
        no = "--no-" + flag[2:]
        return click.Option([f"{flag}/{no}", opt.name], default=opt.default, help=opt.help,
                            show_default=True)
    kind: Any = click.Choice(opt.choices) if opt.choices else opt.value_type
    if opt.range is not None and not opt.grid:
        kind = Number(opt.range)
    if opt.multiple:
        return click.Option([flag, opt.name], type=kind, multiple=True, help=opt.help)
    return click.Option([flag, opt.name], type=kind, default=opt.default, help=opt.help,
                        show_default=opt.default is not None)
