"""Click commands of stage 1: `vitreg shards` and `vitreg extract`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from rich.console import Console

from vitreg.boundary import Number, cli_errors
from vitreg.cache.schema import WITH_OPTIONS, parse_token_mode
from vitreg.core.errors import InputError, Interrupted, RunFailed
from vitreg.core.numbers import SEED, Range
from vitreg.core.progress import human_seconds

from .transforms import INTERPOLATIONS, PRESETS

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


#: The arguments and options of `vitreg extract`, in `--help` order.
EXTRACT_OPTIONS = (
    click.argument("shards", nargs=-1, required=True),
    click.option(
        "--model",
        required=True,
        help="timm model name, e.g. vit_small_patch14_reg4_dinov2.lvd142m",
    ),
    click.option("--out", required=True, help="Store path or fsspec URL."),
    click.option(
        "--weights",
        default="pretrained",
        show_default=True,
        help="pretrained (timm hub or local cache), random (tests, demo), "
        "or a .safetensors / torch file.",
    ),
    click.option(
        "--img-size",
        type=click.IntRange(min=1),
        help="Input size; rounded down to a multiple of the patch size.",
    ),
    click.option(
        "--preprocess",
        default="timm",
        show_default=True,
        type=click.Choice(list(PRESETS)),
        help="Evaluation protocol: timm (the model's pretrained config) or dinov2-linear "
        "(resize 256 / crop 224 at 224 px, bicubic: DINOv2's linear heads).",
    ),
    click.option(
        "--crop-pct",
        type=Number(Range(0, 1, low_open=True)),
        help="Resize the shorter side to S / crop-pct, then centre-crop S (0.875: 256 -> 224).",
    ),
    click.option(
        "--interpolation",
        type=click.Choice(list(INTERPOLATIONS)),
        help="Resize interpolation (timm's names).",
    ),
    click.option(
        "--decode",
        default="cpu",
        show_default=True,
        type=click.Choice(["cpu", "gpu"]),
        help="cpu: PIL and timm's transform, exactly (the default). gpu: decode the JPEGs and "
        "resize them on the run's device with torchvision (nvJPEG on CUDA; what it refuses is "
        "decoded on the CPU); a recorded variant: pixels within a few levels of timm's.",
    ),
    click.option(
        "--batch-size",
        type=click.IntRange(min=1),
        help="Images per forward pass [default: 32 on a CPU; on a GPU the largest power of "
        "two up to 256 that fits a quarter of its memory].",
    ),
    click.option(
        "--precision",
        default="auto",
        show_default=True,
        type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
        help="auto: bf16 autocast on CUDA, fp32 on CPU.",
    ),
    click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:i."),
    click.option(
        "--workers",
        default="auto",
        show_default=True,
        type=WORKERS,
        help="DataLoader decode workers; auto: on a GPU one per core but one; on a CPU one "
        "per core if decoding costs more than the model (measured on the first samples), "
        "else 0 (decoding uses every core between batches).",
    ),
    click.option("--limit", type=click.IntRange(min=1), help="Stop after this many samples."),
    click.option(
        "--keys",
        "keys_file",
        type=click.Path(exists=True, dir_okay=False),
        help="Extract only these sample keys (one a line), rows in the file's order.",
    ),
    click.option("--tokens", "token_mode", default="all", show_default=True, type=TokenMode(),
                 help="Which patch tokens to store: all, none (pooled features only), or "
                 "sampled:K (the K/2 highest-norm and K/2 random others per image)."),
    click.option(
        "--dtype",
        "tokens_dtype",
        default="float16",
        show_default=True,
        type=click.Choice(["float16", "float32"]),
        help="dtype of the stored tokens; float32 when values exceed float16's range.",
    ),
    click.option(
        "--with",
        "with_options",
        default="",
        type=CommaChoice(),
        help="Optional arrays: pixels,blocks,qkv,blocks_qkv.",
    ),
    click.option(
        "--blocks",
        default="",
        type=BlockList(),
        help="Also store the tokens, norms and [CLS] attention of these blocks "
        "(1 is the first, -1 the last), e.g. 6,12,-1.",
    ),
    click.option(
        "--chunk-rows",
        type=click.IntRange(min=1),
        help="Rows per chunk (default: tokens chunks of ~16 MiB).",
    ),
    click.option("--seed", default=42, show_default=True, type=Number(SEED),
                 help="Seed of random weights and of the tokens drawn by --tokens sampled:K."),
    click.option(
        "--rank",
        type=click.IntRange(min=0),
        help="This job's rank among --world-size independent jobs (SLURM array).",
    ),
    click.option(
        "--world-size",
        type=click.IntRange(min=1),
        help="Number of independent jobs sharing the store.",
    ),
    click.option(
        "--dry-run",
        is_flag=True,
        help="Count samples, print arrays, bytes and time; write nothing.",
    ),
    click.option("--overwrite", is_flag=True, help="Start afresh even if the store exists."),
    click.option(
        "--strict", is_flag=True, help="Exit non-zero if any row failed or a shard was damaged."
    ),
    click.option("--no-progress", is_flag=True, help="No progress bar (logs, batch jobs)."),
)


def with_options(fn: Callable, options: tuple[Callable, ...]) -> Callable:
    """Apply click `options` to `fn`, first one outermost (as when stacked)."""
    for option in reversed(options):
        fn = option(fn)
    return fn


def _extract_command(
    shards: tuple[str, ...],
    out: str,
    workers: int | str,
    rank: int | None,
    world_size: int | None,
    dry_run: bool,
    overwrite: bool,
    strict: bool,
    no_progress: bool,
    **options: Any,
) -> None:
    """Run SHARDS (paths, brace patterns, pipe: URLs) through a timm ViT into a store.

    Under torchrun each rank writes its own chunk-aligned range of rows;
    without it, --rank/--world-size split the rows among independent jobs.
    """
    # `options` are `run_extract`'s keywords, named as the root attributes.
    from .run import run_extract

    options["shards"] = list(shards)
    if dry_run:
        from .dryrun import run_dry_run

        print_dry_run(run_dry_run(**options))
        return
    try:
        summary = run_extract(
            **options,
            out=out,
            workers=workers,
            overwrite=overwrite,
            progress=not no_progress,
            rank=rank,
            world_size=world_size,
        )
    except KeyboardInterrupt:
        raise Interrupted("interrupted: the rows written so far are kept; "
                          "rerun the same command to resume") from None
    except OSError as exc:
        # exit 1: the run started, its rows so far are kept
        raise RunFailed(write_failure(exc, out)) from exc
    print_summary(summary)
    check_outcome(summary, strict=strict)


extract_command = click.command("extract")(
    cli_errors(with_options(_extract_command, EXTRACT_OPTIONS))
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
