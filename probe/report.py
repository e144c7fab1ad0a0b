"""A result as a rich table: one row per head and token category."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

_FORMATS = {"top1": "{:.2%}", "top5": "{:.2%}", "distance": "{:.3f}", "mse": "{:.2f}",
            "l2": "{:.2f}", "count": "{:d}"}


def result_table(result: dict[str, Any]) -> Table:
    """Final metrics of a result dict (as `run_probe` returns it)."""
    metrics = result["metrics"]
    rows = _rows(metrics)
    keys = list(dict.fromkeys(k for _, m in rows for k in m))
    store = result["store"]
    title = f"vitreg probe {result['probe']}: {store['model']} ({store['weights']})"
    table = Table(title=title, caption=_caption(result))
    table.add_column("tokens / features")
    for key in keys:
        table.add_column(key, justify="right")
    for name, m in rows:
        table.add_row(name, *(_fmt(key, m.get(key)) for key in keys))
    return table


def _rows(metrics: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    if set(metrics) >= {"normal", "outlier"}:  # position, reconstruct
        return [(name, m or {}) for name, m in metrics.items()]
    return list(metrics.items())


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return "-"
    try:
        return _FORMATS.get(key, "{:.4g}").format(value)
    except (TypeError, ValueError):
        return str(value)


def _caption(result: dict[str, Any]) -> str:
    split = result.get("split", {})
    parts = [f"{split.get('train_images', '?')} train / {split.get('val_images', '?')} val images"]
    if result.get("epochs_run"):
        parts.append(f"{result['epochs_run']} epochs")
    parts.append(f"{result['backend']} on {result['environment']['device']}")
    parts.append(f"{result['elapsed_s']:.1f} s")
    units = result.get("units", {})
    if "l2" in units:
        parts.append("mse, l2 in 0-255 pixel units")
    if "distance" in units:
        parts.append("distance in patches")
    return "; ".join(parts)


def print_result(result: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    console.print(result_table(result))
    for note in result.get("notes", []):
        console.print(f"[yellow]note:[/] {note}")
