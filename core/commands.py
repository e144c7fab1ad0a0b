"""A click group that lists its commands in the order they were added (the
order a user runs them), not alphabetically."""

from __future__ import annotations

import click


class InOrderGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)
