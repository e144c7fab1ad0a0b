"""The one place that knows the stages' `run_*` functions and their keyword
arguments: plan option -> keyword, and one small `call_*` per stage.

When a stage's signature changes, this table is what to adapt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Plan key (in `[study]` or `[extract.NAME]`) -> `run_extract` keyword.
EXTRACT_KWARGS: dict[str, str] = {
    "weights": "weights", "seed": "seed", "img_size": "img_size", "tokens": "token_mode",
    "with": "with_options", "limit": "limit", "batch_size": "batch_size",
    "precision": "precision", "device": "device", "workers": "workers",
    "dtype": "tokens_dtype", "chunk_rows": "chunk_rows", "preprocess": "preprocess",
    "crop_pct": "crop_pct", "interpolation": "interpolation", "keys": "keys_file",
}
#: Keys an `[extract.NAME]` table takes: the split, and the keywords above.
EXTRACT_KEYS: set[str] = {"split", *EXTRACT_KWARGS} - {"weights", "seed"}
#: `[study]` keys that are defaults of every extraction.
STUDY_EXTRACT_DEFAULTS = ("weights", "seed", "batch_size", "precision", "device", "workers")

def show_bars() -> bool:
    """Progress bars inside steps only on a terminal (not in job logs)."""
    from vitreg.core.progress import console

    return console.is_terminal


def extract_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """`run_extract` keywords of one extraction step's configuration."""
    return {EXTRACT_KWARGS[k]: v for k, v in config.items() if k in EXTRACT_KWARGS}


def call_extract(*, shards: list[str], model: str, out: str, config: dict[str, Any],
                 overwrite: bool) -> dict[str, Any]:
    from vitreg.extract.run import run_extract

    summary = run_extract(shards=shards, model=model, out=out, overwrite=overwrite,
                          progress=show_bars(), **extract_kwargs(config))
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
    """What is wrong with an extraction's `tokens` or `with`, or None."""
    from vitreg.cache.schema import WITH_OPTIONS, parse_token_mode

    unknown = sorted(set(config.get("with", [])) - set(WITH_OPTIONS))
    if unknown:
        return f"with: unknown {unknown}; known: {list(WITH_OPTIONS)}"
    try:
        parse_token_mode(str(config.get("tokens", "all")))
    except ValueError as exc:
        return f"tokens: {exc}"
    return None
