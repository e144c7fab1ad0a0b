"""vitreg's error hierarchy: one base class for every failure a user can fix.

Every failure a user can fix is a `VitregError` (zarr's habit: one base class,
each subclass also deriving from the builtin that fits) whose message says
what is wrong and what to do; the command line (`vitreg.boundary.cli_errors`)
prints it as `Error: <message>` and exits with its `exit_code`. A mistake in
vitreg's own code (a registry used wrongly, `core/registry.py`, a writer
handed rows off its chunks) is not a `VitregError`: it keeps its traceback.
"""

from __future__ import annotations


class VitregError(Exception):
    """Base class of every error vitreg raises on purpose for its user."""

    #: The exit status of a command that ends with this error: 2, a refusal
    #: (nothing, or nothing more, was done).
    exit_code: int = 2


class UsageError(VitregError, ValueError):
    """An option or argument cannot work; nothing has been done yet."""


class InputError(VitregError, ValueError):
    """An input (shard, image, label, store, file) is not what vitreg can use."""


class RunFailed(VitregError, RuntimeError):
    """A command ran and its outcome is a failure (problems found, failed rows
    under --strict, a write that failed midway): exit status 1."""

    exit_code = 1


class Interrupted(VitregError):
    """Stopped by Ctrl-C; the message says what was kept: exit status 130."""

    exit_code = 130
