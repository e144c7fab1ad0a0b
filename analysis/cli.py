"""`vitreg analysis {norms|similarity|maps|report} STORE... --out DIR`: the
commands only parse arguments and call one `run_*` function."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from vitreg.core.errors import cli_errors

from .maps import TOP_K, run_maps
from .norms import run_norms
from .report import run_report
from .similarity import REDUNDANT_PERCENTILE, run_similarity


def _common(fn: Callable) -> Callable:
    """Arguments every analysis takes."""
    for option in reversed([
        click.argument("stores", nargs=-1, required=True),
        click.option("--out", required=True, type=click.Path(file_okay=False),
                     help="Folder for the figures (PNG) and their data (JSON)."),
        click.option("--images", default=5000, show_default=True, type=click.IntRange(0),
                     help="Seeded sample of ok images per store (0: all), as in the study."),
        click.option("--seed", default=42, show_default=True, type=int),
        click.option("--allow-partial", is_flag=True,
                     help="Use the rows written so far of an incomplete store."),
    ]):
        fn = option(fn)
    return fn


def _similarity_options(fn: Callable) -> Callable:
    fn = click.option("--redundant-cut", type=float, default=None,
                      help="Absolute neighbour-similarity cut for 'redundant' "
                           "(overrides --redundant-percentile).")(fn)
    return click.option(
        "--redundant-percentile", default=REDUNDANT_PERCENTILE, show_default=True,
        type=click.FloatRange(0, 100),
        help="'Redundant' = neighbour similarity above this percentile of normal tokens'.")(fn)


def _maps_options(fn: Callable) -> Callable:
    fn = click.option("--index", "indices", multiple=True, type=int,
                      help="Row index of an image to draw (repeatable).")(fn)
    fn = click.option("--key", "keys", multiple=True, help="Key of an image (repeatable).")(fn)
    return click.option("--top", default=TOP_K, show_default=True, type=click.IntRange(1),
                        help="Else draw the images with the highest max patch norm.")(fn)


def _call(run: Callable[..., Any], **kwargs: Any) -> Any:
    return run(**kwargs)


@click.group("analysis")
def analysis() -> None:
    """Statistics, figures and an HTML report from one or more stores."""


@analysis.command("norms")
@cli_errors
@_common
def norms_cmd(stores: tuple[str, ...], **kwargs: Any) -> None:
    """Norm histograms, 98th-percentile threshold and statistics (Claims 1-2)."""
    result = _call(run_norms, stores=list(stores), **kwargs)
    click.echo(f"wrote {result['figures'][0]}")


@analysis.command("similarity")
@cli_errors
@_common
@_similarity_options
def similarity_cmd(stores: tuple[str, ...], **kwargs: Any) -> None:
    """Neighbour similarity of outlier vs normal tokens (Claim 3)."""
    result = _call(run_similarity, stores=list(stores), **kwargs)
    for label, stats in result["stats"].items():
        click.echo(f"{label}: outliers {stats['ratio']:.3g}x more likely redundant")


@analysis.command("maps")
@cli_errors
@_common
@_maps_options
def maps_cmd(stores: tuple[str, ...], **kwargs: Any) -> None:
    """Input | [CLS] attention | norm maps per image, q/k/v and per-block maps."""
    result = _call(run_maps, stores=list(stores), **kwargs)
    click.echo(f"wrote {len(result['figures'])} figures to {kwargs['out']}")


@analysis.command("report")
@cli_errors
@_common
@_similarity_options
@_maps_options
@click.option("--probes", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Probe results JSON (repeatable).")
def report_cmd(stores: tuple[str, ...], **kwargs: Any) -> None:
    """Every analysis and the probe results in one self-contained report.html."""
    click.echo(f"wrote {_call(run_report, stores=list(stores), **kwargs)}")
