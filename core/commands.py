"""click helpers of the stages' commands: a group that lists its commands in the
order they were added (the order a user runs them), not alphabetically, and the
click option built from an option record (`core.options.Option`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from .numbers import Number
from .options import Option


class InOrderGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


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
    """`opt` as a click option: `--flag/--no-flag` for a yes/no, a repeatable flag for
    a list, a checked number for a range, a choice for choices."""
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
