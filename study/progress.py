"""What `study run` prints as it goes: each step as it finishes, with its time
and how many are done, then one table of every step run and its time."""

from __future__ import annotations

import time
from typing import Any

from rich.table import Table

from vitreg.core.progress import console, human_seconds

from .steps import Step


class StepClock:
    """Times steps as they finish: a step's time is the time since the previous
    one finished (or since `begin`), which is its run time when steps run one
    after the other, and its wait in a wave of jobs."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.rows: list[tuple[str, str, float]] = []
        self.mark = time.perf_counter()

    def begin(self, steps: list[Step], states: dict[str, Any]) -> None:
        """A stage starts: say what it will run and why."""
        for step in steps:
            console.print(f"study: {step.id}: {states[step.id].status} "
                          f"({states[step.id].reason})")
        self.mark = time.perf_counter()

    def done(self, step: Step, _result: Any = None) -> None:
        now = time.perf_counter()
        seconds, self.mark = now - self.mark, now
        self.rows.append((step.id, step.stage, seconds))
        console.print(f"study: [{len(self.rows)}/{self.total}] {step.id} done in "
                      f"{human_seconds(seconds)}")

    def table(self, skipped: int, seconds: float) -> Table:
        table = Table("step", "stage", "time", title="study: steps run",
                      caption=f"{len(self.rows)} run, {skipped} already done; "
                              f"{human_seconds(seconds)} in all")
        for step_id, stage, secs in self.rows:
            table.add_row(step_id, stage, human_seconds(secs))
        return table
