"""Deciding what a step needs (done, to do, stale, redo or stop, and why) and
running one step: the stage call, then its stamp, written last."""

from __future__ import annotations

import importlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import stages
from .steps import Step, read_stamp, write_atomic, write_stamp


@dataclass
class State:
    #: "done"; "todo"; "stale" (its inputs or settings changed); "redo" (--redo);
    #: "stop": a finished extraction that changed or cannot be judged, kept as it
    #: is: the run stops until it is fixed or named with --redo.
    status: str
    reason: str = ""


def _diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += _diff(a, b, f"{prefix}{key}.")
        elif a != b:
            short = lambda v: (json.dumps(v, default=str)[:60])  # noqa: E731
            changes.append(f"{prefix}{key}: {short(a)} -> {short(b)}")
    return changes


def judge_store(step: Step) -> State:
    """An extraction stamped with this identity: done, to resume, or a store that
    cannot be judged (which stops the run: it is never deleted on a guess)."""
    from vitreg.cache import open_store

    try:
        complete = bool(open_store(step.output, allow_partial=True).complete)
    except Exception as exc:  # noqa: BLE001  (any reason is shown; nothing is deleted)
        return State("stop", f"its store cannot be opened ({type(exc).__name__}: {exc}); "
                     f"it is kept as it is: fix it, or rerun with --redo {step.id}")
    return State("done") if complete else State("todo", "incomplete: resumes")


def _legacy_match(stamp: dict[str, Any], step: Step) -> bool:
    """A stamp of an older vitreg (full configuration, files as path, size and
    mtime) that agrees with this step on everything that changes the output."""
    if stamp.get("identity") is not None or stamp.get("inputs"):
        return False
    old = Step(id=step.id, stage=step.stage, config=dict(stamp.get("config") or {}), output="")
    if old.identity != step.identity:
        return False
    short = lambda entries: [[os.path.basename(str(e[0])), *e[1:2]] for e in entries]  # noqa: E731
    files = stamp.get("files") or {}
    return {k: short(v) for k, v in files.items()} == {k: short(v) for k, v in step.files.items()}


def step_state(step: Step) -> State:
    """done: stamped with this identity and the output complete; stale: stamped
    otherwise. A finished store is redone only when named with --redo."""
    stamp = read_stamp(step)
    store = step.stage == "extract" and Path(step.output).exists()
    if step.redo and (stamp is not None or store):
        return State("redo", "--redo: " + ("the store is deleted and extracted afresh"
                                           if store else "run again"))
    if stamp is None:
        pending = _pending_hash(step)
        if store and pending is not None and pending != step.hash:
            return State("stop", "an extraction interrupted under other settings is there; "
                         f"it is kept: rerun with --redo {step.id} to extract it afresh")
        if pending is not None:
            return State("todo", "interrupted: resumes")
        if store:
            return State("todo", "an unstamped store is there: resumed if it was extracted "
                         "with these settings, else the run stops")
        return State("todo", "not run yet")
    if stamp.get("hash") != step.hash:
        if step.stage == "extract" and _legacy_match(stamp, step):
            return judge_store(step) if store else State("todo", "output missing")
        old = {"config": stamp.get("config", {}), "files": stamp.get("files", {}),
               "inputs": stamp.get("inputs", {})}
        new = {"config": step.identity, "files": step.files, "inputs": step.inputs}
        reason = "; ".join(_diff(old, new)[:4]) or "configuration changed"
        if store:
            return State("stop", f"{reason}; its finished store is kept: rerun with "
                         f"--redo {step.id} to extract it afresh")
        return State("stale", reason)
    if step.stage == "extract":
        return judge_store(step) if store else State("todo", "output missing")
    if not Path(step.output).exists():
        return State("todo", "output missing")
    return State("done")


def execute_step(step: Step, paths: dict[str, str]) -> dict[str, Any]:
    """Run `step` (in this process or a submitted job); `paths`: step id -> output."""
    for module in step.imports:
        importlib.import_module(module)
    resume = _pending_hash(step) == step.hash
    step.stamp.unlink(missing_ok=True)
    write_atomic(step.pending, step.hash)
    result = _RUNNERS[step.stage](step, paths, step.redo and not resume)
    write_stamp(step, result)
    step.pending.unlink(missing_ok=True)
    return result


def _pending_hash(step: Step) -> str | None:
    try:
        return step.pending.read_text().strip()
    except OSError:
        return None


def _run_extract(step: Step, paths: dict[str, str], fresh: bool) -> dict[str, Any]:
    """`fresh` (--redo, not an interrupted redo) deletes the store first; otherwise
    extract resumes it, or refuses one extracted with other settings."""
    return stages.call_extract(stages.extract_config(
        step.config, out=step.output, overwrite=fresh, progress=stages.show_bars()))


def _run_probe(step: Step, paths: dict[str, str], fresh: bool) -> dict[str, Any]:
    val = step.config["val"]
    options = dict(step.config["options"])
    if step.config["kind"] == "reconstruct":
        # The stores are the study's own, extracted from the plan's [data] (the user's
        # file): their recorded shards are the user's, so reconstruct may reopen them.
        options.setdefault("trust_recorded_shards", True)
    return stages.call_probe(kind=step.config["kind"], train=paths[step.config["train"]],
                             val=paths[val] if val else None, out=step.output,
                             options=options)


def _fresh_dir(path: str) -> None:
    if Path(path).exists():
        shutil.rmtree(path)


def _run_analysis(step: Step, paths: dict[str, str], fresh: bool) -> dict[str, Any]:
    _fresh_dir(step.output)
    return stages.call_analysis(kind=step.config["kind"],
                                stores=[paths[s] for s in step.config["stores"]],
                                out=step.output, options=step.config["options"])


def _run_report(step: Step, paths: dict[str, str], fresh: bool) -> dict[str, Any]:
    from .report import add_study_sections

    _fresh_dir(step.output)
    html = stages.call_report(stores=[paths[s] for s in step.config["stores"]],
                              probes=[paths[p] for p in step.config["probes"]],
                              out=step.output, options=step.config["options"])
    add_study_sections(Path(html), [paths[a] for a in step.config["analyses"]])
    return {"report": html}


_RUNNERS = {"extract": _run_extract, "probe": _run_probe, "analysis": _run_analysis,
            "report": _run_report}
