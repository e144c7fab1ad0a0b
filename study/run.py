"""`run_study`: check the plan, decide each step's state, then run what is to
do or stale, stage after stage (extractions, probes, analyses, the report)."""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

from vitreg.core import UsageError

from .execute import State, step_state
from .executors import get_executor
from .plan import load_plan
from .progress import StepClock
from .steps import STAGES, Step, build_steps

console = Console(stderr=True)


#: The lock file `study run` holds in --out while it runs.
LOCK_NAME = ".vitreg-study.lock"


def plan_states(steps: list[Step]) -> dict[str, State]:
    """Each step's state; a step after a step that will run is at least 'todo'."""
    states: dict[str, State] = {}
    for step in steps:
        state = step_state(step)
        redone = [d for d in step.deps if states[d].status != "done"]
        if state.status == "done" and redone:
            state = State("todo", f"after {redone[0]}")
        states[step.id] = state
    return states


def mark_redo(steps: list[Step], patterns: tuple[str, ...] | list[str]) -> None:
    """`--redo STEP` (an id such as extract:DINOv2-S:val, or a glob such as extract:*)."""
    for pattern in patterns:
        hits = [s for s in steps if fnmatch.fnmatchcase(s.id, pattern)]
        if not hits:
            raise UsageError(f"--redo {pattern!r} names no step of the plan; its steps are "
                             f"{', '.join(s.id for s in steps)}")
        for step in hits:
            step.redo = True


def check_stops(states: dict[str, State]) -> None:
    """Refuse to run while a finished store is in doubt: nothing is deleted on a guess."""
    stops = [(k, v.reason) for k, v in states.items() if v.status == "stop"]
    if stops:
        lines = "; ".join(f"{k}: {why}" for k, why in stops[:3])
        more = f" (and {len(stops) - 3} more)" if len(stops) > 3 else ""
        raise UsageError(f"{len(stops)} finished extraction(s) would be lost, so nothing was "
                         f"run: {lines}{more}")


@contextlib.contextmanager
def out_lock(out: str) -> Iterator[None]:
    """Hold an exclusive lock on --out (released when the process ends, even killed):
    two runs on one folder would write the same stores."""
    Path(out).mkdir(parents=True, exist_ok=True)
    path = Path(out) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "?"
            raise UsageError(f"another `vitreg study run` ({holder}) is running on {out}; "
                             "wait for it to finish, or give another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, since {time.strftime('%H:%M:%S')}".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def check_only(steps: list[Step], states: dict[str, State], only: str) -> None:
    """`--only STAGE` runs nothing whose inputs, from another stage, are not done."""
    stage_of = {s.id: s.stage for s in steps}
    for step in steps:
        if step.stage != only or states[step.id].status == "done":
            continue
        missing = [d for d in step.deps if stage_of[d] != only and states[d].status != "done"]
        if missing:
            raise UsageError(f"--only {only}: {step.id} needs {missing[0]}, which is "
                             f"{states[missing[0]].status}; run the earlier stages first")


def run_study(*, plan: str, out: str, dry_run: bool = False, only: str | None = None,
              executor: str = "local", redo: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run (or with `dry_run`, describe) every step of `plan` into `out`;
    `redo`: step ids (or globs) to run again even when done."""
    started = time.perf_counter()
    get_executor(executor)  # an unknown name is refused before anything runs
    if only is not None and only not in STAGES:
        raise UsageError(f"--only {only!r}: one of {STAGES}")
    loaded = load_plan(plan, placeholders=dry_run)
    steps = build_steps(loaded, out)
    mark_redo(steps, redo)
    if dry_run:
        from .dryrun import describe

        return describe(loaded, steps, plan_states(steps))
    with out_lock(out):
        return _run_steps(loaded, steps, out, only, executor, started)


def _run_steps(loaded: Any, steps: list[Step], out: str, only: str | None, executor: str,
               started: float) -> dict[str, Any]:
    states = plan_states(steps)
    check_stops(states)
    runner = get_executor(executor).make(Path(out) / "jobs", loaded.resources)
    paths = {s.id: s.output for s in steps}
    ran = []
    if only is not None:
        check_only(steps, states, only)
    clock = StepClock(sum(states[s.id].status != "done" and (only is None or s.stage == only)
                          for s in steps))
    for stage in STAGES:
        if only is not None and stage != only:
            continue
        todo = [s for s in steps if s.stage == stage and states[s.id].status != "done"]
        clock.begin(todo, states)
        runner(todo, paths, lambda step, result: (ran.append(step.id), clock.done(step)))
    seconds = time.perf_counter() - started
    console.print(clock.table(len(steps) - len(ran), seconds))
    return {"ran": ran, "steps": [s.id for s in steps], "seconds": seconds,
            "report": str(Path(out) / "report" / "report.html")}
