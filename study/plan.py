"""The study plan: a TOML file written by `vitreg study init`, read and checked
(every key, model, recipe and shard) before any work starts."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from braceexpand import UnbalancedBracesError, braceexpand

from vitreg.core import InputError, UsageError
from vitreg.core.numbers import COUNT, COUNT_OR_ZERO, Range
from vitreg.extract.config import EXTRACT, STUDY, fields_of, plan_key, plan_keys

from . import paper
from .stages import (
    EXTRACT_KEYS,
    analysis_kinds,
    analysis_options_problem,
    check_extract_options,
    probe_kinds,
    probe_options_problem,
)

#: Allowed keys of each table (model entries: the `[[model]]` array).
KEYS: dict[str, set[str]] = {
    "study": {*plan_keys(STUDY), "imports"},
    "data": {"val", "train"},
    "resources": set(paper.RESOURCES),
    "extract": EXTRACT_KEYS,
    "probe": {"kind", "train", "val", "options"},
    "analysis": {"kind", "store", "options"},
    "report": {"store", "options"},
    "model": {"name", "timm", "weights", "extract", "probe", "analysis", "head"},
}
SPLITS = ("val", "train")

#: What each value of `[study]`, `[extract.NAME]`, `[resources]` and a model may
#: be: a Range (a number in it), a tuple of choices, `str`, `bool`, or `list`
#: (of strings). Keys not here are checked by their stage.
def extract_values(table: str) -> dict[str, object]:
    """The kinds of the extraction options `table` may set, from `ExtractConfig`'s fields."""
    kinds: dict[str, object] = {}
    for f, spec in fields_of():
        if table in spec.plan:
            kinds[plan_key(f.name, spec)] = (
                _KIND_VALUES.get(spec.kind or "") or spec.choices or spec.range
                or (bool if isinstance(f.default, bool) else str))
    return kinds


_KIND_VALUES: dict[str, object] = {"workers": ("auto", COUNT_OR_ZERO), "with": list,
                                   "blocks": list}
VALUES: dict[str, dict[str, object]] = {
    "study": {**extract_values(STUDY), "imports": list},
    "extract": {**extract_values(EXTRACT), "split": str},
    "resources": {"partition": str, "gpus_per_job": COUNT_OR_ZERO,
                  "cpus_per_gpu_job": COUNT, "cpus_per_cpu_job": COUNT, "mem_gb": COUNT,
                  "timeout_min": COUNT, "local_gpus": COUNT_OR_ZERO, "local_cpu_jobs": COUNT},
    "model": {"name": str, "timm": str, "weights": str, "extract": list, "probe": list,
              "analysis": list},
}


class PlanError(UsageError):
    """The plan cannot run; the message names the line or key."""


@dataclass
class Plan:
    path: str
    study: dict[str, Any]
    data: dict[str, str]
    resources: dict[str, Any]
    extract: dict[str, dict[str, Any]]
    probe: dict[str, dict[str, Any]]
    analysis: dict[str, dict[str, Any]]
    report: dict[str, Any]
    models: list[dict[str, Any]] = field(default_factory=list)


def line_of(text: str, table: str, key: str | None = None, index: int = 0) -> int | None:
    """1-based line of `key` in `[table]` (the `index`-th `[[table]]`), or of the header."""
    current, seen, header_line = None, -1, None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        head = re.fullmatch(r"\[\[?\s*([^\]]+?)\s*\]\]?(\s*#.*)?", line)
        if head:
            current = head.group(1)
            if current == table:
                seen += 1
                if seen == index:
                    header_line = number
            continue
        if current == table and seen == index and key is not None:
            if re.match(rf"{re.escape(key)}\s*=", line):
                return number
    return header_line


def _where(plan_text: str, path: str, table: str, key: str | None, index: int = 0) -> str:
    number = line_of(plan_text, table, key, index)
    spot = f"[{table}]" + (f" {key}" if key else "")
    return f"{path}:{number}: {spot}" if number else f"{path}: {spot}"


def load_plan(path: str | os.PathLike, *, placeholders: bool = False) -> Plan:
    """Read and check `path`; raise `PlanError` naming the line or key of the first problem.

    `placeholders`: accept unfilled `[data]` patterns (a dry run lists the steps anyway).
    """
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read plan {path}: {exc.strerror}") from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"{path}: not valid TOML: {exc}") from exc
    plan = _from_raw(raw, path, text)
    check_plan(plan, text, placeholders=placeholders)
    return plan


def _from_raw(raw: dict[str, Any], path: str, text: str) -> Plan:
    for top in raw:
        if top not in KEYS:
            raise PlanError(f"{_where(text, path, top, None)}: unknown table {top!r}; "
                            f"known: {sorted(KEYS)}")
    for table in ("study", "data", "resources", "report"):
        _check_keys(raw.get(table, {}), table, path, text)
    for table in ("extract", "probe", "analysis"):
        for name, body in raw.get(table, {}).items():
            _check_keys(body, f"{table}.{name}", path, text, allowed=KEYS[table])
    models = raw.get("model", [])
    for i, body in enumerate(models):
        _check_keys(body, "model", path, text, index=i)
    return Plan(path=path, study=raw.get("study", {}), data=raw.get("data", {}),
                resources={**paper.RESOURCES, **raw.get("resources", {})},
                extract=raw.get("extract", {}), probe=raw.get("probe", {}),
                analysis=raw.get("analysis", {}), report=raw.get("report", {}), models=models)


def _check_keys(body: Any, table: str, path: str, text: str, *, index: int = 0,
                allowed: set[str] | None = None) -> None:
    allowed = KEYS[table] if allowed is None else allowed
    if not isinstance(body, dict):
        raise PlanError(f"{_where(text, path, table, None, index)}: expected a table")
    kinds = VALUES.get(table.split(".")[0], {})
    for key, value in body.items():
        if key not in allowed:
            raise PlanError(f"{_where(text, path, table, key, index)}: unknown key {key!r}; "
                            f"known: {sorted(allowed)}")
        why = value_problem(value, kinds.get(key))
        if why:
            raise PlanError(f"{_where(text, path, table, key, index)}: {key} = {value!r}: {why}")


def value_problem(value: Any, kind: object) -> str | None:
    """Why `value` cannot be a value of this kind (see VALUES), or None."""
    if kind is None:
        return None
    if isinstance(kind, tuple):
        choices = [k for k in kind if not isinstance(k, Range)]
        ranges = [k for k in kind if isinstance(k, Range)]
        if value in choices or (ranges and not isinstance(value, str)
                                and ranges[0].problem(value) is None):
            return None
        return "give " + " or ".join([repr(c) for c in choices] + [r.describe() for r in ranges])
    if isinstance(kind, Range):
        if isinstance(value, str):  # "42" in quotes is a string in TOML, not a number
            return f"give {kind.describe()}, without quotes"
        return kind.problem(value)
    if kind is list:
        if isinstance(value, list) and all(isinstance(v, str | int) for v in value):
            return None
        return 'give a list, such as ["a", "b"]'
    if not isinstance(value, kind):  # type: ignore[arg-type]
        return f"give a {'true/false' if kind is bool else 'string in quotes'}"
    return None


def check_plan(plan: Plan, text: str, *, placeholders: bool = False) -> None:
    """Recipes, models and data: every reference resolves and every shard exists."""
    where = lambda table, key=None, i=0: _where(text, plan.path, table, key, i)  # noqa: E731
    _import_plugins(plan)  # first: they may register probes, analyses and timm models
    for table, recipes, kinds in (("probe", plan.probe, probe_kinds()),
                                  ("analysis", plan.analysis, analysis_kinds())):
        for name, body in recipes.items():
            if body.get("kind") not in kinds:
                raise PlanError(f"{where(f'{table}.{name}', 'kind')}: unknown {table} kind "
                                f"{body.get('kind')!r}; known: {sorted(kinds)}")
    for name, body in plan.extract.items():
        if body.get("split") not in SPLITS:
            raise PlanError(f"{where(f'extract.{name}', 'split')}: split must be one of "
                            f"{SPLITS}")
        problem = check_extract_options(body)
        if problem:
            key, _, why = problem.partition(": ")
            raise PlanError(f"{where(f'extract.{name}', key)}: {why}")
    _check_options(plan, where)
    if not plan.models:
        raise PlanError(f"{plan.path}: no [[model]] entries")
    for i, model in enumerate(plan.models):
        _check_model(plan, model, lambda key, i=i: where("model", key, i))
    _check_data(plan, where, placeholders)


def _check_options(plan: Plan, where: Any) -> None:
    """Every key of a probe's or an analysis's `options`, and the report's, against
    what its registry entry declares (names, types, ranges)."""
    checks = [(f"{table}.{name}", body.get("options", {}),
               (probe_options_problem if table == "probe" else analysis_options_problem),
               body["kind"])
              for table, recipes in (("probe", plan.probe), ("analysis", plan.analysis))
              for name, body in recipes.items()]
    checks.append(("report", plan.report.get("options", {}), analysis_options_problem, None))
    for table, options, problem, kind in checks:
        if not isinstance(options, dict):
            raise PlanError(f"{where(table, 'options')}: expected a table")
        why = problem(kind, options)
        if why:
            raise PlanError(f"{where(table, 'options')}: {why}")


def _import_plugins(plan: Plan) -> None:
    """Modules that register extra timm models (tests' tiny models, a lab's own),
    probes or analyses."""
    import importlib

    for module in plan.study.get("imports", []):
        importlib.import_module(module)


def _check_model(plan: Plan, model: dict[str, Any], where: Any) -> None:
    import timm

    for key in ("name", "timm"):
        if not isinstance(model.get(key), str):
            raise PlanError(f"{where(key)}: every [[model]] needs {key} = \"...\"")
    arch = model["timm"].split(".")[0]
    if not timm.is_model(arch):
        raise PlanError(f"{where('timm')}: unknown timm model {model['timm']!r}")
    if "." in model["timm"] and model["timm"] not in timm.list_pretrained(arch + ".*"):
        raise PlanError(f"{where('timm')}: timm has no pretrained tag {model['timm']!r}; "
                        f"it has {timm.list_pretrained(arch + '.*')}")
    for table, refs in (("extract", plan.extract), ("probe", plan.probe),
                        ("analysis", plan.analysis)):
        for name in model.get(table, []):
            if name not in refs:
                raise PlanError(f"{where(table)}: model {model['name']} lists {table} "
                                f"{name!r}, which has no [{table}.{name}] table")
    stores = set(model.get("extract", []))
    _check_head(plan, model, stores, where)
    for name in model.get("probe", []):
        needed = {plan.probe[name].get("train"), plan.probe[name].get("val")} - {None}
        if needed - stores:
            raise PlanError(f"{where('probe')}: probe {name!r} reads extract(s) "
                            f"{sorted(needed - stores)} that model {model['name']} lacks")
    for name in model.get("analysis", []):
        if plan.analysis[name].get("store") not in stores:
            raise PlanError(f"{where('analysis')}: analysis {name!r} reads extract "
                            f"{plan.analysis[name].get('store')!r} that model "
                            f"{model['name']} lacks")


def _check_head(plan: Plan, model: dict[str, Any], stores: set[str], where: Any) -> None:
    """`head = PATH` (Table 4): an official head file, run by the `[probe.head]` recipe."""
    if "head" not in model:
        return
    head = model["head"]
    if not isinstance(head, str) or not Path(head).is_file():
        raise PlanError(f"{where('head')}: head file {head!r} does not exist")
    recipe = plan.probe.get("head")
    if recipe is None or recipe.get("kind") != "linear":
        raise PlanError(f"{where('head')}: a model's head needs a [probe.head] table of kind "
                        "\"linear\" naming the store it is evaluated on")
    if recipe.get("train") not in stores:
        raise PlanError(f"{where('head')}: [probe.head] reads extract {recipe.get('train')!r} "
                        f"that model {model['name']} lacks")


def model_probes(model: dict[str, Any]) -> list[str]:
    """The probe recipes a model runs: its `probe` list, and `head` when it names a head."""
    return [*model.get("probe", []), *(["head"] if model.get("head") else [])]


def used_splits(plan: Plan) -> set[str]:
    return {plan.extract[e]["split"] for m in plan.models for e in m.get("extract", [])}


def _check_data(plan: Plan, where: Any, placeholders: bool) -> None:
    for split in sorted(used_splits(plan)):
        pattern = plan.data.get(split)
        if not isinstance(pattern, str) or not pattern:
            raise PlanError(f"{where('data', split)}: the plan extracts the {split} split but "
                            f"[data] {split} is not set")
        if pattern.startswith(paper.PLACEHOLDER):
            if placeholders:
                continue
            raise PlanError(f"{where('data', split)}: [data] {split} is still a placeholder; "
                            "fill in the shard pattern")
        try:
            paths = shard_paths(pattern)
        except PlanError as exc:
            raise PlanError(f"{where('data', split)}: {exc}") from exc
        missing = [p for p in paths if "://" not in p
                   and not p.startswith("pipe:") and not Path(p).is_file()]
        if missing:
            raise PlanError(f"{where('data', split)}: {len(missing)} shard(s) of [data] {split} "
                            f"do not exist, e.g. {missing[0]}")


def file_name(name: str) -> str:
    """`name` as one path component: letters, digits, `-`, `_` and `.` kept, the rest `_`
    (a leading dot too, so that no name is `..` or hidden)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return "_" + safe[1:] if safe.startswith(".") else safe


def shard_paths(pattern: str) -> list[str]:
    """The shards of a space-separated list of brace patterns."""
    if pattern.startswith(paper.PLACEHOLDER):
        return [pattern]
    try:
        return [p for part in pattern.split() for p in braceexpand(part)]
    except UnbalancedBracesError as exc:
        raise PlanError(f"[data] shard pattern {pattern!r} has unbalanced braces: every {{ "
                        "needs its }, as in train-{000..063}.tar") from exc
