"""The study's steps: built from the plan in dependency order, each with an
identity (a hash of its configuration and of its inputs' identities) stamped
next to its output, atomically and last, once the output is complete."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitreg.core.files import atomic_write_text as write_atomic

from .plan import Plan, model_probes, shard_paths
from .stages import STUDY_EXTRACT_DEFAULTS

STAGES = ("extract", "probe", "analysis", "report")


@dataclass
class Step:
    """One unit of work: a store, a probe result, an analysis folder or the report."""

    id: str
    stage: str
    config: dict[str, Any]
    output: str
    deps: list[str] = field(default_factory=list)
    files: dict[str, list[Any]] = field(default_factory=dict)  # input files' identities
    hash: str = ""
    imports: list[str] = field(default_factory=list)
    inputs: dict[str, str] = field(default_factory=dict)  # dependency id -> its hash

    @property
    def stamp(self) -> Path:
        return Path(self.output + ".step.json")

    @property
    def pending(self) -> Path:
        return Path(self.output + ".step.pending")


def canonical_hash(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_identity(path: str) -> list[Any]:
    """(size, mtime in ns) of a local file; the path alone for URLs."""
    if "://" in path or path.startswith("pipe:") or not os.path.exists(path):
        return [path]
    st = os.stat(path)
    return [path, st.st_size, st.st_mtime_ns]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def extract_step(plan: Plan, out: Path, model: dict[str, Any], name: str) -> Step:
    recipe = plan.extract[name]
    defaults = {k: plan.study[k] for k in STUDY_EXTRACT_DEFAULTS if k in plan.study}
    config = {**defaults, **{k: v for k, v in recipe.items() if k != "split"}}
    if "weights" in model:
        config["weights"] = model["weights"]
    shards = shard_paths(plan.data.get(recipe["split"], ""))
    weights = str(config.get("weights", "random"))
    files = {"shards": [file_identity(p) for p in shards]}
    if weights not in ("random", "pretrained"):
        files["weights"] = [file_identity(weights)]
    if config.get("keys"):
        files["keys"] = [file_identity(str(config["keys"]))]
    config.update(model=model["timm"], split=recipe["split"], shards=shards)
    return Step(id=f"extract:{model['name']}:{name}", stage="extract", config=config,
                output=str(out / "stores" / f"{_safe(model['name'])}-{name}.zarr"), files=files)


def probe_step(plan: Plan, out: Path, model: dict[str, Any], name: str) -> Step:
    recipe = plan.probe[name]
    deps = [f"extract:{model['name']}:{recipe['train']}"]
    if recipe.get("val"):
        deps.append(f"extract:{model['name']}:{recipe['val']}")
    config = {"kind": recipe["kind"], "options": dict(recipe.get("options", {})),
              "train": deps[0], "val": deps[1] if len(deps) > 1 else None}
    files = {}
    if name == "head":  # Table 4: the model's official head file (plan.model_probes)
        config["options"]["head"] = model["head"]
        files["head"] = [file_identity(model["head"])]
    return Step(id=f"probe:{model['name']}:{name}", stage="probe", config=config,
                output=str(out / "probes" / f"{_safe(model['name'])}-{name}.json"), deps=deps,
                files=files)


def analysis_step(plan: Plan, out: Path, name: str) -> Step | None:
    recipe = plan.analysis[name]
    models = [m for m in plan.models if name in m.get("analysis", [])]
    if not models:
        return None
    deps = [f"extract:{m['name']}:{recipe['store']}" for m in models]
    config = {"kind": recipe["kind"], "options": dict(recipe.get("options", {})),
              "stores": deps}
    return Step(id=f"analysis:{name}", stage="analysis", config=config,
                output=str(out / "analysis" / _safe(name)), deps=deps)


def report_step(plan: Plan, out: Path, steps: list[Step]) -> Step:
    store = plan.report.get("store", "val")
    stores = [f"extract:{m['name']}:{store}" for m in plan.models
              if store in m.get("extract", [])]
    probes = [s.id for s in steps if s.stage == "probe"]
    analyses = [s.id for s in steps if s.stage == "analysis"]
    config = {"stores": stores, "probes": probes, "analyses": analyses,
              "options": dict(plan.report.get("options", {}))}
    return Step(id="report", stage="report", config=config,
                output=str(out / "report"), deps=[*stores, *probes, *analyses])


def build_steps(plan: Plan, out: str | os.PathLike) -> list[Step]:
    """Every step of the plan, in dependency order, each with its hash."""
    root = Path(out)
    steps = [extract_step(plan, root, m, e) for m in plan.models for e in m.get("extract", [])]
    steps += [probe_step(plan, root, m, p) for m in plan.models for p in model_probes(m)]
    steps += [s for a in plan.analysis if (s := analysis_step(plan, root, a)) is not None]
    steps.append(report_step(plan, root, steps))
    by_id = {s.id: s for s in steps}
    for step in steps:
        step.imports = list(plan.study.get("imports", []))
        step.inputs = {d: by_id[d].hash for d in step.deps}
        step.hash = canonical_hash({"stage": step.stage, "config": step.config,
                                    "files": step.files, "inputs": step.inputs})
    return steps


def read_stamp(step: Step) -> dict[str, Any] | None:
    try:
        return json.loads(step.stamp.read_text())
    except (OSError, ValueError):
        return None


def write_stamp(step: Step, result: dict[str, Any]) -> None:
    body = {"step": step.id, "hash": step.hash, "config": step.config, "files": step.files,
            "inputs": step.inputs, "result": result}
    write_atomic(step.stamp, json.dumps(body, indent=2, default=str) + "\n")
