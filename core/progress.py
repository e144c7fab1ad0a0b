"""One progress style for every long step: a rich bar with a rate and an ETA
taken over the whole run, and the console every stage prints to (stderr).

rich's own speed (`Task.speed`) is a windowed estimate over the last
advances: a bar advanced twice in quick succession (the last batches of a
short extraction) showed 1,777 img/s for a 4.6 img/s run. The columns here
divide what is done by the time since the bar started instead.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn
from rich.text import Text

#: Where every stage prints what it is doing (stdout stays for results).
console = Console(stderr=True)


def human_seconds(seconds: float) -> str:
    """A duration in the unit that reads best: 4.2 s, 3.5 min, 2.1 h."""
    if seconds < 90:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def average_rate(completed: float, elapsed: float | None) -> float | None:
    """Units per second since the start, or None before anything is done."""
    if not completed or not elapsed:
        return None
    return completed / elapsed


class AverageRateColumn(ProgressColumn):
    """`12.3 img/s`: done / time since the bar started."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:  # type: ignore[override]
        rate = average_rate(task.completed, task.finished_time or task.elapsed)
        if rate is None:
            return Text(f"... {self.unit}/s", style="progress.data.speed")
        shown = f"{rate:.1f}" if rate < 100 else f"{rate:,.0f}"
        return Text(f"{shown} {self.unit}/s", style="progress.data.speed")


class ElapsedEtaColumn(ProgressColumn):
    """`0:42 elapsed, 1:10 left`: the time left from the average rate."""

    def render(self, task) -> Text:  # type: ignore[override]
        elapsed = task.finished_time or task.elapsed or 0.0
        text = f"{_clock(elapsed)} elapsed"
        rate = average_rate(task.completed, elapsed)
        if not task.finished and rate and task.total:
            text += f", {_clock((task.total - task.completed) / rate)} left"
        return Text(text, style="progress.elapsed")


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


@contextlib.contextmanager
def progress_bar(total: int, *, label: str, unit: str = "img", enabled: bool = True,
                 transient: bool = False) -> Iterator[Callable[[int], None]]:
    """A bar of `total` units; yields `advance(n)`. Disabled: a no-op."""
    if not enabled:
        yield lambda n: None
        return
    columns = (TextColumn(label), BarColumn(bar_width=16), MofNCompleteColumn(),
               AverageRateColumn(unit), ElapsedEtaColumn())
    with Progress(*columns, console=console, transient=transient) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


@contextlib.contextmanager
def timed(label: str, *, enabled: bool = True, start: bool = True) -> Iterator[dict[str, float]]:
    """Print `label ...` now (unless not `start`: a bar shows the progress) and
    `label: done in 4.2 s` at the end; yields a dict whose "seconds" holds the
    time taken once the block is left."""
    record: dict[str, float] = {}
    if enabled and start:
        console.print(f"{label} ...")
    start = time.perf_counter()
    try:
        yield record
    finally:
        record["seconds"] = time.perf_counter() - start
    if enabled:
        console.print(f"{label}: done in {human_seconds(record['seconds'])}")
