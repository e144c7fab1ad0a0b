"""`vitreg study {init|run}`: the commands parse, then call one function."""

from __future__ import annotations

import click

from vitreg.boundary import LiveChoice, cli_errors

from .executors import EXECUTORS
from .steps import STAGES


@click.group("study")
def study() -> None:
    """The whole reproducibility study from one plan file, resumable."""


@study.command("init")
@click.option("--paper", is_flag=True, help="Every model and experiment of the study.")
@click.option("--models", default="", help="Comma-separated timm names, timm wildcards "
              "allowed ('vit_*_dinov3.lvd1689m'): a plan of your own; with --paper, the "
              "study's names (DINOv2-S,DINOv2-S+reg): the paper plan for those models only.")
@click.option("--weights", default="pretrained", show_default=True,
              help="pretrained, random or a checkpoint PATH.")
@click.option("--val", default=None, help="Shard pattern of the validation split.")
@click.option("--train", default=None, help="Shard pattern of the training split.")
@click.option("--img-size", type=click.IntRange(1), default=None,
              help="Input size of every extraction (default: each model's own).")
@cli_errors
def init_command(paper: bool, models: str, weights: str, val: str | None, train: str | None,
                 img_size: int | None) -> None:
    """Print a plan (TOML) to stdout."""
    from .init import own_plan, paper_plan

    names = [m.strip() for m in models.split(",") if m.strip()]
    if paper:
        text = paper_plan(val=val, train=train, weights=weights, models=names or None)
    else:
        text = own_plan(models=names, weights=weights, val=val or "", train=train,
                        img_size=img_size)
    click.echo(text, nl=False)


@study.command("run")
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder of the study: stores, results, analyses and the report.")
@click.option("--dry-run", is_flag=True, help="List every step, its state, size and hours.")
@click.option("--only", type=click.Choice(STAGES), default=None,
              help="Run only this stage (the earlier ones must be done).")
@click.option("--executor", type=LiveChoice(EXECUTORS), default="local", show_default=True,
              help="How the steps run: local, one after another here; slurm and submitit-*, "
              "each step a job (every registered executor is offered).")
@click.option("--redo", multiple=True, metavar="STEP",
              help="Run this step again although it is done (an id from --dry-run, or a glob "
              "such as 'extract:*'); a finished extraction is deleted and extracted afresh "
              "only when named here. Repeatable.")
@cli_errors
def run_command(plan: str, out: str, dry_run: bool, only: str | None, executor: str,
                redo: tuple[str, ...]) -> None:
    """Run every step of PLAN into --out, skipping those already done.

    Settings that only change how a step runs (an extraction's batch size,
    workers and device) redo nothing; a finished store whose settings changed,
    or that cannot be opened, stops the run until it is named with --redo.
    """
    from .run import run_study

    result = run_study(plan=plan, out=out, dry_run=dry_run, only=only, executor=executor,
                       redo=redo)
    if not dry_run:
        click.echo(f"report: {result['report']}")
