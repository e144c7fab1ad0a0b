"""Click commands of stage 1: `vitreg shards` and `vitreg extract`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console

from vitreg.boundary import Number, cli_errors
from vitreg.cache.schema import WITH_OPTIONS, parse_token_mode
from vitreg.core.errors import InputError, Interrupted, RunFailed
from vitreg.core.progress import human_seconds

from .config import ExtractConfig, Setting, fields_of, flag_of, number_range, value_type

console = Console(stderr=True, soft_wrap=True)


class TokenMode(click.ParamType):
    name = "all|none|sampled:K"

    def convert(self, value, param, ctx):  # type: ignore[override]
        try:
            parse_token_mode(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return value


class CommaChoice(click.ParamType):
    """A comma-separated subset of fixed choices (`--with pixels,blocks`)."""

    name = ",".join(WITH_OPTIONS)

    def convert(self, value, param, ctx):  # type: ignore[override]
        if isinstance(value, (list, tuple)):
            return list(value)
        items = [v.strip() for v in value.split(",") if v.strip()]
        unknown = sorted(set(items) - set(WITH_OPTIONS))
        if unknown:
            self.fail(f"unknown {unknown}; choose from {', '.join(WITH_OPTIONS)}", param, ctx)
        return items


class BlockList(click.ParamType):
    """`--blocks 6,12,-1`: block numbers, 1 the first, -1 the last."""

    name = "N,N,..."

    def convert(self, value, param, ctx):  # type: ignore[override]
        if isinstance(value, (list, tuple)):
            return tuple(value)
        try:
            return tuple(int(v) for v in value.split(",") if v.strip())
        except ValueError:
            self.fail(f"{value!r}: give block numbers separated by commas, such as 6,12,-1",
                      param, ctx)


@click.command("shards")
@cli_errors
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the tars.")
@click.option("--per-shard", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Images per tar.")
@click.option(
    "--synsets",
    type=click.Path(exists=True, dir_okay=False),
    help="`synset name` per line; files named n01440764_... get that line's index.",
)
def shards_command(src: str, out: str, per_shard: int, synsets: str | None) -> None:
    """Pack an image folder into webdataset shards (original bytes, `cls`, `json`)."""
    from .shards import run_shards

    notes: list[str] = []
    paths = run_shards(src=src, out=out, per_shard=per_shard, synsets=synsets, notes=notes)
    for note in notes:
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"wrote {len(paths)} shard(s) to {out}")


class Workers(click.ParamType):
    """`auto` or a number of decode worker processes."""

    name = "auto|N"

    def convert(self, value, param, ctx):  # type: ignore[override]
        if value == "auto" or isinstance(value, int):
            return value
        try:
            workers = int(value)
        except ValueError:
            workers = -1
        if workers < 0:
            self.fail(f"{value!r} is neither auto nor a number of workers (0 or more)", param, ctx)
        return workers


WORKERS = Workers()


#: click types of the `Setting.kind`s that have one.
KIND_TYPES: dict[str, click.ParamType] = {
    "path": click.Path(exists=True, dir_okay=False), "tokens": TokenMode(),
    "with": CommaChoice(), "blocks": BlockList(), "workers": WORKERS,
}


def click_type(f: dataclasses.Field, spec: Setting) -> click.ParamType | None:
    """The click type of an `ExtractConfig` field, from its `Setting` and type."""
    if spec.kind is not None:
        return KIND_TYPES[spec.kind]
    if spec.choices is not None:
        return click.Choice(list(spec.choices))
    if spec.range is None and value_type(f) not in (int, float):
        return None
    allowed = number_range(f)
    if allowed.integer and allowed.high is None and allowed.low is not None:
        return click.IntRange(min=int(allowed.low), min_open=allowed.low_open)
    return Number(allowed)


def config_option(f: dataclasses.Field, spec: Setting) -> Callable:
    """`vitreg extract`'s argument or option for one `ExtractConfig` field."""
    if spec.kind == "shards":
        return click.argument(f.name, nargs=-1, required=True)
    required = f.default is dataclasses.MISSING
    if isinstance(f.default, bool):
        return click.option(flag_of(f.name, spec), f.name, is_flag=True, help=spec.help)
    default = None if required else f.default
    if default == ():
        default = ""  # the kind's click type reads "" as nothing
    return click.option(
        flag_of(f.name, spec), f.name, required=required, default=default,
        show_default=default not in (None, ""), type=click_type(f, spec), help=spec.help)


#: Options of the command itself, not of the extraction.
COMMAND_OPTIONS = (
    click.option(
        "--dry-run",
        is_flag=True,
        help="Count samples, print arrays, bytes and time; write nothing.",
    ),
    click.option(
        "--strict", is_flag=True, help="Exit non-zero if any row failed or a shard was damaged."
    ),
    click.option("--no-progress", is_flag=True, help="No progress bar (logs, batch jobs)."),
)


def extract_options(config: type = ExtractConfig) -> tuple[Callable, ...]:
    """The arguments and options of `vitreg extract`, in `--help` order: one per
    field of `config` that has a flag, then the command's own."""
    generated = tuple(config_option(f, spec) for f, spec in fields_of(config)
                      if spec.flag is not None or spec.kind == "shards")
    return generated + COMMAND_OPTIONS


def with_options(fn: Callable, options: tuple[Callable, ...]) -> Callable:
    """Apply click `options` to `fn`, first one outermost (as when stacked)."""
    for option in reversed(options):
        fn = option(fn)
    return fn


def _extract_command(*, dry_run: bool, strict: bool, no_progress: bool, **options: Any) -> None:
    """Run SHARDS (paths, brace patterns, pipe: URLs) through a timm ViT into a store.

    Under torchrun each rank writes its own chunk-aligned range of rows;
    without it, --rank/--world-size split the rows among independent jobs.
    """
    config = ExtractConfig(**options, progress=not no_progress)
    if dry_run:
        from .dryrun import run_dry_run

        print_dry_run(run_dry_run(config))
        return
    from .run import run_extract

    try:
        summary = run_extract(config)
    except KeyboardInterrupt:
        raise Interrupted("interrupted: the rows written so far are kept; "
                          "rerun the same command to resume") from None
    except OSError as exc:
        # exit 1: the run started, its rows so far are kept
        raise RunFailed(write_failure(exc, config.out)) from exc
    print_summary(summary)
    check_outcome(summary, strict=strict)


extract_command = click.command("extract")(
    cli_errors(with_options(_extract_command, extract_options()))
)


def check_outcome(summary: Any, *, strict: bool) -> None:
    """Exit non-zero when no row is ok, or under --strict when any row failed."""
    if summary.rows and summary.failed == summary.rows:
        raise InputError(
            f"no row of {summary.store} is ok: every image failed (reasons above); "
            "fix the inputs, then rerun with --overwrite"
        )
    if strict and (summary.failed or summary.damaged_shards):
        raise RunFailed(f"--strict: {summary.failed} failed row(s), "
                        f"{len(summary.damaged_shards)} damaged shard(s); reasons above")


def write_failure(exc: OSError, out: str) -> str:
    """One sentence for an OSError while writing the store, by its cause."""
    import errno

    if exc.errno == errno.ENOSPC:
        what = f"the disk is full ({exc}); free some space"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        what = f"no permission to write there ({exc}); choose a writable --out"
    else:
        what = f"{exc}; fix the destination"
    return (
        f"writing the store {out} failed: {what}, then run the same command again "
        "to resume (rows written so far are safe)"
    )


def print_dry_run(plan: dict) -> None:
    from rich.table import Table

    from vitreg.core.files import human_bytes

    table = Table(
        "array",
        "shape",
        "dtype",
        "on disk",
        title=f"{plan['model']}: {plan['n_rows']} rows from {plan['shards']} shard(s)",
    )
    for a in plan["arrays"]:
        table.add_row(a.name, str(a.shape), a.dtype, human_bytes(a.nbytes))
    table.add_row("total", "", "", human_bytes(sum(a.nbytes for a in plan["arrays"])))
    Console(soft_wrap=True).print(table)
    console.print(
        f"{plan['images_per_second']:.1f} img/s on {plan['device']} ({plan['precision']}), "
        f"timed on the second of two batches: about {human_seconds(plan['seconds'])} for "
        f"{plan['n_rows']} rows"
    )
    for damage in plan["damaged"]:
        console.print(f"[red]damaged shard[/] {damage['url']}: {damage['reason']}")


def print_summary(summary) -> None:
    for note in summary.notes:
        console.print(f"[yellow]note:[/] {note}")
    for damage in summary.damaged_shards:
        console.print(f"[red]damaged shard[/] {damage['url']}: {damage['reason']}")
    if summary.world > 1:
        console.print(
            f"rank {summary.rank} of {summary.world}: rows {summary.row_range[0]}.."
            f"{summary.row_range[1] - 1}"
        )
    for line in reason_lines(summary.failures, "failed") + reason_lines(summary.warnings, "warned"):
        console.print(line)
    done = (f"already complete, nothing to do ({human_seconds(summary.seconds)})"
            if summary.processed == 0 else
            f"{summary.processed} processed in {human_seconds(summary.seconds)} "
            f"({summary.images_per_second:.1f} img/s)")
    console.print(
        f"{summary.store}: {summary.rows} rows, {summary.ok} ok, {summary.failed} failed; {done}"
        + (
            f", {sum(g['count'] for g in summary.warnings)} with a warning"
            if summary.warnings
            else ""
        )
    )


def reason_lines(groups: list[dict], what: str) -> list[str]:
    """Rows grouped by reason: count and example keys."""
    colour = "red" if what == "failed" else "yellow"
    return [
        f"[{colour}]{what}[/] {g['count']} row(s): {g['reason']} (e.g. {', '.join(g['keys'])})"
        for g in groups
    ]
