"""The one place that knows the stages' `run_*` functions and their keyword
arguments: plan option -> keyword, and one small `call_*` per stage.

An extraction's plan keys are not listed here: they come from `ExtractConfig`'s
fields (`extract/config.py`, each field's `Setting.plan`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vitreg.extract.config import (
    EXTRACT,
    STUDY,
    ExtractConfig,
    OptionError,
    check_option,
    plan_keys,
)

#: Plan key (in `[study]` or `[extract.NAME]`) -> `ExtractConfig` field, from its fields.
EXTRACT_KWARGS: dict[str, str] = {**plan_keys(STUDY), **plan_keys(EXTRACT)}
#: Keys an `[extract.NAME]` table takes: the split, and the options a recipe may set.
EXTRACT_KEYS: set[str] = {"split", *plan_keys(EXTRACT)}
#: `[study]` keys that are defaults of every extraction.
STUDY_EXTRACT_DEFAULTS = tuple(plan_keys(STUDY))


def show_bars() -> bool:
    """Progress bars inside steps only on a terminal (not in job logs)."""
    from vitreg.core.progress import console

    return console.is_terminal


def extract_config(config: dict[str, Any], **run: Any) -> ExtractConfig:
    """The `ExtractConfig` of one extraction step's configuration (plan keys, and
    `model` and `shards`), with `run`'s settings (`out`, `overwrite`, ...)."""
    options = {EXTRACT_KWARGS[k]: v for k, v in config.items() if k in EXTRACT_KWARGS}
    return ExtractConfig(shards=config["shards"], model=config["model"], **options, **run)


def call_extract(config: ExtractConfig) -> dict[str, Any]:
    from vitreg.extract.run import run_extract

    summary = run_extract(config)
    return {"rows": summary.rows, "ok": summary.ok, "failed": summary.failed,
            "seconds": round(summary.seconds, 2)}


def call_probe(*, kind: str, train: str, val: str | None, out: str,
               options: dict[str, Any]) -> dict[str, Any]:
    from vitreg.probe.run import run_probe

    result = run_probe(kind, train, out=out, val=val, progress=show_bars(), **options)
    return {"metrics": result.get("metrics")}


def call_analysis(*, kind: str, stores: list[str], out: str,
                  options: dict[str, Any]) -> dict[str, Any]:
    from vitreg.analysis import ANALYSES

    result = ANALYSES[kind].call(stores, out=out, **options)
    return {"figures": [str(Path(f)) for f in result.get("figures", [])]}


def call_report(*, stores: list[str], probes: list[str], out: str,
                options: dict[str, Any]) -> str:
    from vitreg.analysis.report import run_report

    return str(run_report(stores, out=out, probes=probes, **options))


# -- what the registries hold: the kinds a plan may name and the options each takes ----
def probe_kinds() -> list[str]:
    """Every registered probe, in registration order."""
    import vitreg.probe.probes  # noqa: F401  (fills the registry)
    from vitreg.probe.registry import PROBES

    return list(PROBES)


def analysis_kinds() -> list[str]:
    """Every registered analysis, in report order."""
    from vitreg.analysis.common import registered

    return [entry.name for entry in registered()]


def probe_options_problem(kind: str, options: dict[str, Any]) -> str | None:
    """What is wrong with a probe recipe's options (names, types, ranges), or None."""
    from vitreg.probe.registry import ProbeError, get_probe
    from vitreg.probe.run import resolve_options

    try:
        resolve_options(get_probe(kind), options)
    except ProbeError as exc:
        return str(exc)
    return None


def analysis_options_problem(kind: str | None, options: dict[str, Any]) -> str | None:
    """What is wrong with an analysis recipe's options (`kind`), or the report's (None)."""
    from vitreg.analysis.common import ANALYSES, report_options
    from vitreg.core import UsageError
    from vitreg.core.options import resolve

    try:
        if kind is None:
            resolve(report_options(), options, what="the report")
        else:
            ANALYSES[kind].check(options)
    except UsageError as exc:
        return str(exc)
    return None


def check_extract_options(config: dict[str, Any]) -> str | None:
    """What is wrong with an extraction's options (`ExtractConfig`'s checks), or None."""
    for key, value in config.items():
        if key in EXTRACT_KWARGS:
            try:
                check_option(EXTRACT_KWARGS[key], value, label=key)
            except OptionError as exc:
                return f"{key}: {exc.why}"
    return None
