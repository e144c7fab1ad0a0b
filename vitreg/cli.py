"""The `vitreg` command: one click group gathering each stage's commands."""

from __future__ import annotations

import click

from vitreg import __version__
from vitreg.analysis.cli import analysis
from vitreg.boundary import InOrderGroup
from vitreg.cache.cli import info_command, pack_command, verify_command
from vitreg.core.runtime import tune_allocator
from vitreg.core.scrub import redact_logs
from vitreg.extract.cli import extract_command, shards_command
from vitreg.probe.cli import probe
from vitreg.study.cli import study

from .demo import demo_command


@click.group(cls=InOrderGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vitreg")
def cli() -> None:
    """Cache a ViT's tokens once, then probe and analyse outlier tokens and registers."""
    tune_allocator()
    redact_logs()  # no credentials of a URL in any log line


for command in (shards_command, extract_command, info_command, verify_command, pack_command,
                probe, analysis, study, demo_command):
    cli.add_command(command)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
