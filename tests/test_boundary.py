"""The command-line boundary (`vitreg/boundary.py`): every command exits
through it, each error with its documented status, a bug with its traceback."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from vitreg.boundary import cli_errors
from vitreg.cli import cli
from vitreg.core.errors import InputError, Interrupted, RunFailed, UsageError, VitregError


def leaves(command: click.Command, path: str = "vitreg"):
    """Every command that runs something, with its path; groups built from a
    registry on demand are asked for their commands."""
    if not isinstance(command, click.Group):
        yield path, command
        return
    ctx = click.Context(command)
    for name in command.list_commands(ctx):
        yield from leaves(command.get_command(ctx, name), f"{path} {name}")


def test_every_command_exits_through_the_boundary():
    found = list(leaves(cli))
    assert len(found) >= 15  # shards ... demo, the probes, analyses and study commands
    bypass = [path for path, command in found
              if not getattr(command.callback, "through_boundary", False)]
    assert not bypass, f"commands not wrapped by vitreg.boundary.cli_errors: {bypass}"


def command_raising(exc: BaseException) -> click.Command:
    @click.command()
    @cli_errors
    def fails() -> None:
        raise exc

    return fails


@pytest.mark.parametrize(("error", "status"), [
    (UsageError("--batch-size 0: give an integer, 1 or more"), 2),
    (InputError("shard x.tar: not a tar file"), 2),
    (VitregError("a refusal"), 2),
    (RunFailed("store: 2 problem(s), listed above"), 1),
    (Interrupted("interrupted: the rows written so far are kept"), 130),
])
def test_each_error_exits_with_its_status_and_one_sentence(error, status):
    result = CliRunner().invoke(command_raising(error), [])
    assert result.exit_code == status
    assert result.output == f"Error: {error}\n"


def test_the_sentence_loses_the_credentials_of_a_url():
    error = InputError("cannot read https://me:hunter2@example.org/store.zarr")
    result = CliRunner().invoke(command_raising(error), [])
    assert result.exit_code == 2 and "hunter2" not in result.output
    assert "example.org/store.zarr" in result.output


def test_a_bug_is_no_user_error_and_keeps_its_traceback():
    result = CliRunner().invoke(command_raising(KeyError("slot")), [])
    assert isinstance(result.exception, KeyError) and "Error:" not in result.output
    for error_class in (RunFailed, Interrupted, UsageError, InputError):
        assert issubclass(error_class, VitregError)
    from vitreg.cache.writer import UnalignedWriteError

    assert not issubclass(UnalignedWriteError, VitregError)
