"""`vitreg probe KIND STORE --out FILE.json`: one click command per registered
probe, its flags built from the registry; each parses, then calls `run_probe`."""

from __future__ import annotations

import logging
from typing import Any

import click
from rich.console import Console
from rich.logging import RichHandler

from vitreg.boundary import cli_errors, click_option

from .registry import PROBES, ProbeSpec
from .report import print_result
from .run import run_probe


class _ProbeGroup(click.Group):
    """One command per registered probe, in registration order, built from the
    registry when asked for: a probe registered later (a plugin's) is one too."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(PROBES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return _command(PROBES[cmd_name]) if cmd_name in PROBES else None


@click.group(name="probe", cls=_ProbeGroup)
def probe() -> None:
    """Linear probes on a vitreg store, streamed from the cache (CPU or --device cuda).

    Normal and outlier patch tokens follow the store's outlier rule (norm above
    the 98th percentile of its patch-token norms); normal tokens are drawn to
    match the outlier count. Validation is --val STORE or a seeded split by image.
    """


def _command(spec: ProbeSpec) -> click.Command:
    def callback(store: str, val: str | None, out: str, verbose: bool, progress: bool,
                 **options: Any) -> None:
        _configure_logging(verbose)
        result = run_probe(spec.name, store, out=out, val=val, progress=progress, **options)
        print_result(result)
        click.echo(f"results written to {out}", err=True)

    params: list[click.Parameter] = [
        click.Argument(["store"]),
        click.Option(["--val", "val"], default=None, metavar="STORE",
                     help="validation store of the same model (else a split of STORE)"),
        click.Option(["--out", "out"], required=True, metavar="FILE.json",
                     help="where the results JSON is written"),
        click.Option(["-v", "--verbose/--quiet", "verbose"], default=False,
                     help="also log selection counts and every epoch's loss on stderr"),
        click.Option(["--progress/--no-progress", "progress"], default=True, show_default=True,
                     help="a bar per fit (epochs x heads x learning rates) on stderr"),
        *(click_option(opt) for opt in spec.all_options),
    ]
    return click.Command(spec.name, callback=cli_errors(callback), params=params,
                         help=f"Probe: {spec.summary}.", short_help=spec.summary)


def _configure_logging(verbose: bool) -> None:
    logger = logging.getLogger("vitreg.probe")
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    if not any(isinstance(h, RichHandler) for h in logger.handlers):
        logger.addHandler(RichHandler(console=Console(stderr=True), show_path=False))
        logger.propagate = False
