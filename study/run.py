"""`run_study`: check the plan, decide each step's state, then run what is to
do or stale, stage after stage (extractions, probes, analyses, the report)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console

from vitreg.core import UsageError

from .execute import State, step_state
from .executors import EXECUTORS, run_local, run_submitit
from .plan import load_plan
from .progress import StepClock
from .steps import STAGES, Step, build_steps

console = Console(stderr=True)


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
              executor: str = "local") -> dict[str, Any]:
    """Run (or with `dry_run`, describe) every step of `plan` into `out`."""
    started = time.perf_counter()
    if executor not in EXECUTORS:
        raise UsageError(f"--executor {executor!r}: one of {EXECUTORS}")
    if only is not None and only not in STAGES:
        raise UsageError(f"--only {only!r}: one of {STAGES}")
    loaded = load_plan(plan, placeholders=dry_run)
    steps = build_steps(loaded, out)
    states = plan_states(steps)
    if dry_run:
        from .dryrun import describe

        return describe(loaded, steps, states)
    runner = (run_local if executor == "local"
              else run_submitit(executor, Path(out) / "jobs", loaded.resources))
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
