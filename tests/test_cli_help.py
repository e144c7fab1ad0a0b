"""The command line's help: commands in pipeline order, every option explained."""

from __future__ import annotations

import click

from vitreg.cli import cli


def walk(command: click.Command, path: str = "vitreg"):
    yield path, command
    if isinstance(command, click.Group):  # the probe and analysis groups build on demand
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            yield from walk(command.get_command(ctx, name), f"{path} {name}")


def test_commands_listed_in_pipeline_order():
    ctx = click.Context(cli)
    assert cli.list_commands(ctx) == ["shards", "extract", "info", "verify", "pack", "probe",
                                      "analysis", "study", "demo"]


def test_every_option_has_help():
    missing = [f"{path} {'/'.join(param.opts)}" for path, command in walk(cli)
               for param in command.params
               if isinstance(param, click.Option) and not param.hidden and not param.help
               and param.name not in ("help", "version")]
    assert not missing, missing


def test_analyses_listed_in_pipeline_order():
    group = cli.commands["analysis"]
    assert group.list_commands(click.Context(group)) == ["norms", "similarity", "maps", "report"]
