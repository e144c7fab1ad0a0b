"""The `vitreg` command: one click group gathering each stage's commands."""

from __future__ import annotations

import click

from vitreg import __version__
from vitreg.runtime import quiet_openmp, tune_allocator

quiet_openmp()  # before the stages import torch: OpenMP reads it once, when torch loads

from vitreg.analysis.cli import analysis  # noqa: E402
from vitreg.cache.cli import info_command, pack_command, verify_command  # noqa: E402
from vitreg.extract.cli import extract_command, shards_command  # noqa: E402
from vitreg.probe.cli import probe  # noqa: E402

from .demo import demo_command  # noqa: E402


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vitreg")
def cli() -> None:
    """Cache a ViT's tokens once, then probe and analyse outlier tokens and registers."""
    tune_allocator()


for command in (shards_command, extract_command, info_command, verify_command, pack_command,
                probe, analysis, demo_command):
    cli.add_command(command)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
