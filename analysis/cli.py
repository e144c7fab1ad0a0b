"""`vitreg analysis {norms|similarity|maps|report} STORE... --out DIR`: one
command per registered analysis (`common.register_analysis`), plus `report`,
which runs them all; the commands only parse arguments and call `run_*`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from vitreg.boundary import InOrderGroup, Number, cli_errors
from vitreg.core.numbers import SEED
from vitreg.core.paths import check_not_inside

from .common import Analysis, registered
from .report import run_report

#: Arguments every analysis takes.
COMMON_OPTIONS = (
    click.argument("stores", nargs=-1, required=True),
    click.option("--out", required=True, type=click.Path(file_okay=False),
                 help="Folder for the figures (PNG) and their data (JSON)."),
    click.option("--images", default=5000, show_default=True, type=click.IntRange(0),
                 help="Seeded sample of ok images per store (0: all), as in the study."),
    click.option("--seed", default=42, show_default=True, type=Number(SEED),
                 help="Seed of the image sample."),
    click.option("--allow-partial", is_flag=True,
                 help="Use the rows written so far of an incomplete store."),
    click.option("--block", type=int, default=None,
                 help="Read this block's tokens, norms and attention (1 the first, -1 the "
                 "last; default the last): stores extracted with --blocks."),
)


def at_block(stores: tuple[str, ...], kwargs: dict[str, Any]) -> list[Any]:
    """STORE arguments, opened at `--block` when one is given (else left to the analysis)."""
    block = kwargs.pop("block", None)
    if block is None:
        return list(stores)
    from vitreg.cache import open_store

    return [open_store(s, allow_partial=kwargs.get("allow_partial", False)).at_block(block)
            for s in stores]


def _with_options(fn: Callable, options: tuple[Callable, ...]) -> Callable:
    for option in reversed(options):
        fn = option(fn)
    return fn


@click.group("analysis", cls=InOrderGroup)
def analysis() -> None:
    """Statistics, figures and an HTML report from one or more stores."""


def _add_command(entry: Analysis) -> None:
    def command(stores: tuple[str, ...], **kwargs: Any) -> None:
        check_not_inside(kwargs["out"], stores)
        click.echo(entry.summary(entry.run(stores=at_block(stores, kwargs), **kwargs), kwargs))

    command.__name__ = f"{entry.name}_cmd"
    command.__doc__ = entry.help
    analysis.command(entry.name)(
        cli_errors(_with_options(command, COMMON_OPTIONS + entry.options)))


for _entry in registered():
    _add_command(_entry)


def _report_options() -> tuple[Callable, ...]:
    """Every analysis's own options, once each."""
    return tuple(dict.fromkeys(opt for entry in registered() for opt in entry.options))


def report_cmd(stores: tuple[str, ...], **kwargs: Any) -> None:
    """Every analysis and the probe results in one self-contained report.html."""
    check_not_inside(kwargs["out"], [*stores, *kwargs.get("probes", ())])
    click.echo(f"wrote {run_report(stores=at_block(stores, kwargs), **kwargs)}")


_PROBES_OPTION = click.option(
    "--probes", multiple=True, type=click.Path(exists=True, dir_okay=False),
    help="Probe results JSON (repeatable).")
analysis.command("report")(cli_errors(_with_options(
    report_cmd, COMMON_OPTIONS + _report_options() + (_PROBES_OPTION,))))
