"""One bar per fit of a probe: epochs x copies (heads x learning rates).

`run_probe` opens `probe_progress(kind)`; the trainer calls `epoch_done` once
per epoch. A copy that stops early counts its remaining epochs as done, so the
bar ends full whichever way the fit ends. Per-epoch numbers are log lines,
shown only with `-v`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn
from rich.text import Text

from vitreg.core.progress import ElapsedEtaColumn, console


class EpochColumn(ProgressColumn):
    """`epoch 12/30, 15 copies` (heads x learning rates): the epochs of the slowest copy."""

    def __init__(self, epochs: int, copies: int) -> None:
        super().__init__()
        self.epochs, self.copies = epochs, copies

    def render(self, task) -> Text:  # type: ignore[override]
        epoch = int(task.completed) // self.copies
        copies = f"{self.copies} cop{'y' if self.copies == 1 else 'ies'}"
        return Text(f"epoch {epoch}/{self.epochs}, {copies}",
                    style="progress.download")


class _FitBars:
    def __init__(self, label: str) -> None:
        self.label = label
        self.fits = 0
        self.live: Progress | None = None
        self.task = None

    def epoch_done(self, epoch: int, epochs: int, copies: int, active: int) -> None:
        if self.live is None:
            self.fits += 1
            self.live = Progress(TextColumn(f"{self.label} (fit {self.fits})"),
                                 BarColumn(bar_width=20), EpochColumn(epochs, copies),
                                 ElapsedEtaColumn(), console=console)
            self.live.start()
            self.task = self.live.add_task(self.label, total=epochs * copies)
        done = epoch * active + (copies - active) * epochs
        self.live.update(self.task, completed=done)
        if done >= epochs * copies or epoch >= epochs or active == 0:
            self.live.update(self.task, completed=epochs * copies)
            self.close()

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


_current: ContextVar[_FitBars | None] = ContextVar("vitreg_probe_progress", default=None)


@contextlib.contextmanager
def probe_progress(kind: str, *, enabled: bool = True) -> Iterator[None]:
    """Show a bar for every fit made inside the block (none when not `enabled`)."""
    bars = _FitBars(f"probe {kind}") if enabled else None
    token = _current.set(bars)
    try:
        yield
    finally:
        _current.reset(token)
        if bars is not None:
            bars.close()


def epoch_done(epoch: int, epochs: int, copies: int, active: int) -> None:
    """Epoch `epoch` of `epochs` trained; `active` of `copies` copies go on training."""
    bars = _current.get()
    if bars is not None:
        bars.epoch_done(epoch, epochs, copies, active)
