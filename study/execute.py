"""Deciding what a step needs (done, to do, stale and why) and running one step:
the stage call, then its stamp, written last."""

from __future__ import annotations

import importlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import stages
from .steps import Step, read_stamp, write_atomic, write_stamp


@dataclass
class State:
    status: str  # "done", "todo" or "stale"
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


def output_complete(step: Step) -> bool:
    path = Path(step.output)
    if step.stage != "extract":
        return path.exists()
    from vitreg.cache import open_store

    try:
        return bool(open_store(step.output, allow_partial=True).complete)
    except Exception:  # noqa: BLE001  (a missing or damaged store is simply not done)
        return False


def step_state(step: Step) -> State:
    """done: stamped with this hash and the output complete; stale: stamped otherwise."""
    stamp = read_stamp(step)
    if stamp is None:
        partial = step.pending.exists() or Path(step.output).exists()
        return State("todo", "interrupted: resumes" if partial else "not run yet")
    if stamp.get("hash") != step.hash:
        old = {"config": stamp.get("config", {}), "files": stamp.get("files", {}),
               "inputs": stamp.get("inputs", {})}
        new = {"config": step.config, "files": step.files, "inputs": step.inputs}
        changes = _diff(old, new)
        return State("stale", "; ".join(changes[:4]) or "configuration changed")
    if not output_complete(step):
        return State("todo", "output missing or incomplete")
    return State("done")


def execute_step(step: Step, paths: dict[str, str]) -> dict[str, Any]:
    """Run `step` (in this process or a submitted job); `paths`: step id -> output."""
    for module in step.imports:
        importlib.import_module(module)
    resume = _pending_hash(step) == step.hash
    step.stamp.unlink(missing_ok=True)
    write_atomic(step.pending, step.hash)
    result = _RUNNERS[step.stage](step, paths, resume)
    write_stamp(step, result)
    step.pending.unlink(missing_ok=True)
    return result


def _pending_hash(step: Step) -> str | None:
    try:
        return step.pending.read_text().strip()
    except OSError:
        return None


def _run_extract(step: Step, paths: dict[str, str], resume: bool) -> dict[str, Any]:
    config = {k: v for k, v in step.config.items() if k not in ("model", "split", "shards")}
    return stages.call_extract(shards=step.config["shards"], model=step.config["model"],
                               out=step.output, config=config, overwrite=not resume)


def _run_probe(step: Step, paths: dict[str, str], resume: bool) -> dict[str, Any]:
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


def _run_analysis(step: Step, paths: dict[str, str], resume: bool) -> dict[str, Any]:
    _fresh_dir(step.output)
    return stages.call_analysis(kind=step.config["kind"],
                                stores=[paths[s] for s in step.config["stores"]],
                                out=step.output, options=step.config["options"])


def _run_report(step: Step, paths: dict[str, str], resume: bool) -> dict[str, Any]:
    from .report import add_study_sections

    _fresh_dir(step.output)
    html = stages.call_report(stores=[paths[s] for s in step.config["stores"]],
                              probes=[paths[p] for p in step.config["probes"]],
                              out=step.output, options=step.config["options"])
    add_study_sections(Path(html), [paths[a] for a in step.config["analyses"]])
    return {"report": html}


_RUNNERS = {"extract": _run_extract, "probe": _run_probe, "analysis": _run_analysis,
            "report": _run_report}
