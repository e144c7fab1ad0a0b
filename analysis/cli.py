"""`vitreg analysis {norms|similarity|maps|report} STORE... --out DIR`: one
command per registered analysis (`common.register_analysis`), its flags built
from the analysis's option records, plus `report`, which runs them all; the
commands only parse arguments and call `run_*`."""

from __future__ import annotations

from typing import Any

import click

from vitreg.boundary import cli_errors, click_option
from vitreg.core.paths import check_not_inside

from .common import ANALYSES, Analysis, registered, report_options
from .progress import analysis_progress
from .report import run_report


def _arguments() -> list[click.Parameter]:
    """STORE..., --out and --no-progress, which every analysis and the report take."""
    return [click.Argument(["stores"], nargs=-1, required=True),
            click.Option(["--out", "out"], required=True, type=click.Path(file_okay=False),
                         help="Folder for the figures (PNG) and their data (JSON)."),
            click.Option(["--no-progress", "no_progress"], is_flag=True,
                         help="No progress bar on stderr (logs, batch jobs).")]


def _command(entry: Analysis) -> click.Command:
    def callback(stores: tuple[str, ...], out: str, no_progress: bool,
                 **options: Any) -> None:
        check_not_inside(out, stores)
        with analysis_progress(not no_progress):
            result = entry.call(stores, out=out, **options)
        click.echo(entry.summary(result, {"out": out, **options}))

    return click.Command(entry.name, callback=cli_errors(callback), help=entry.help,
                         params=[*_arguments(), *(click_option(o) for o in entry.options)])


def _report_command() -> click.Command:
    def callback(stores: tuple[str, ...], out: str, probes: tuple[str, ...],
                 no_progress: bool, **options: Any) -> None:
        check_not_inside(out, [*stores, *probes])
        with analysis_progress(not no_progress):
            path = run_report(stores, out=out, probes=probes, **options)
        click.echo(f"wrote {path}")

    probes = click.Option(["--probes", "probes"], multiple=True,
                          type=click.Path(exists=True, dir_okay=False),
                          help="Probe results JSON (repeatable).")
    return click.Command(
        "report", callback=cli_errors(callback), params=[
            *_arguments(), *(click_option(o) for o in report_options()), probes],
        help="Every analysis and the probe results in one self-contained report.html.")


class _AnalysisGroup(click.Group):
    """One command per registered analysis, in report order, then `report`; built
    from the registry when asked for, so that a later registration is one too."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [entry.name for entry in registered()] + ["report"]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "report":
            return _report_command()
        return _command(ANALYSES[cmd_name]) if cmd_name in ANALYSES else None


@click.group("analysis", cls=_AnalysisGroup)
def analysis() -> None:
    """Statistics, figures and an HTML report from one or more stores."""
