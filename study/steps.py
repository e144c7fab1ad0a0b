"""The study's steps: built from the plan in dependency order, each with an
identity (a hash of what changes its output: its configuration less the
execution settings, its input files' names, sizes and small files' digests,
and its inputs' identities) stamped next to its output, atomically and last,
once the output is complete."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitreg.core.files import atomic_write_text as write_atomic
from vitreg.core.scrub import redact, redact_values
from vitreg.extract.config import execution_keys

from .plan import Plan, PlanError, file_name, model_probes, shard_paths
from .stages import STUDY_EXTRACT_DEFAULTS

STAGES = ("extract", "probe", "analysis", "report")

#: Settings that change how a step runs, never what it writes: left out of its
#: identity, so editing them redoes nothing. (A probe's batch size is not here:
#: it changes the optimisation; an extraction's only groups the same forwards.)
EXECUTION_KEYS: dict[str, frozenset[str]] = {
    "extract": execution_keys(),  # `ExtractConfig`'s execution-only settings
    "probe": frozenset({"device", "decode_workers", "in_memory", "memory_budget"}),
}
#: Input files up to this size are identified by their content's sha256 too.
DIGEST_LIMIT = 16 * 2**20
#: Stamps written with identities of this kind (absent: path, size and mtime).
IDENTITY_VERSION = 2


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

    redo: bool = False  # --redo: rerun even when done (an extraction starts afresh)

    @property
    def identity(self) -> dict[str, Any]:
        """The configuration keys that change the output (credentials in URLs do not:
        they are left out, so that no stamp records them)."""
        skip = EXECUTION_KEYS.get(self.stage, frozenset())
        if self.stage == "probe":
            return redact_values({**self.config, "options": {
                k: v for k, v in self.config["options"].items() if k not in skip}})
        return redact_values({k: v for k, v in self.config.items() if k not in skip})

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
    """[name, size] of a local file, with the sha256 of its content when small; the
    path alone for URLs. Not its mtime (a copy or a touch changes it, never the
    output) and not a digest of large files (every run would read every shard
    and checkpoint); the path itself is in the step's configuration."""
    if "://" in path or path.startswith("pipe:") or not os.path.isfile(path):
        return [redact(path)]
    size = os.path.getsize(path)
    if size > DIGEST_LIMIT:
        return [os.path.basename(path), size]
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return [os.path.basename(path), size, "sha256:" + digest]


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
                output=str(out / "stores" / f"{file_name(model['name'])}-{file_name(name)}.zarr"),
                files=files)


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
                output=str(out / "probes" / f"{file_name(model['name'])}-{file_name(name)}.json"),
                deps=deps, files=files)


def analysis_step(plan: Plan, out: Path, name: str) -> Step | None:
    recipe = plan.analysis[name]
    models = [m for m in plan.models if name in m.get("analysis", [])]
    if not models:
        return None
    deps = [f"extract:{m['name']}:{recipe['store']}" for m in models]
    config = {"kind": recipe["kind"], "options": dict(recipe.get("options", {})),
              "stores": deps}
    return Step(id=f"analysis:{name}", stage="analysis", config=config,
                output=str(out / "analysis" / file_name(name)), deps=deps)


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
    check_outputs(steps)
    by_id = {s.id: s for s in steps}
    for step in steps:
        step.imports = list(plan.study.get("imports", []))
        step.inputs = {d: by_id[d].hash for d in step.deps}
        step.hash = canonical_hash({"stage": step.stage, "config": step.identity,
                                    "files": step.files, "inputs": step.inputs})
    return steps


def check_outputs(steps: list[Step]) -> None:
    """Two steps never write one path (names that differ only in characters a file
    name cannot hold, or in case on a case-insensitive disk, would)."""
    seen: dict[str, str] = {}
    for step in steps:
        key = step.output.casefold()
        if key in seen:
            raise PlanError(f"{seen[key]} and {step.id} would both write {step.output}: "
                            "give the models (or recipes) names that differ in letters or "
                            "digits, not only in case or punctuation")
        seen[key] = step.id


def read_stamp(step: Step) -> dict[str, Any] | None:
    try:
        return json.loads(step.stamp.read_text())
    except (OSError, ValueError):
        return None


def write_stamp(step: Step, result: dict[str, Any]) -> None:
    body = {"step": step.id, "hash": step.hash, "identity": IDENTITY_VERSION,
            "config": step.identity, "run_config": step.config, "files": step.files,
            "inputs": step.inputs, "result": result}
    write_atomic(step.stamp, redact(json.dumps(body, indent=2, default=str)) + "\n")
