"""A result as a rich table: one row per head and token category."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from vitreg.core.progress import human_seconds

#: Column headers: what each number is, with its unit; `n` is its sample size.
HEADERS = {"top1": "top-1", "top5": "top-5", "distance": "distance (patches)",
           "mse": "MSE (intensity²)", "l2": "L2 (0-255)", "count": "n (val)",
           "classes_seen": "classes in train"}

_FORMATS = {"top1": "{:.2%}", "top5": "{:.2%}", "distance": "{:.3f}", "mse": "{:.2f}",
            "l2": "{:.2f}", "count": "{:d}", "classes_seen": "{:d}"}


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
        table.add_column(HEADERS.get(key, key), justify="right")
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


def used_images(result: dict[str, Any]) -> tuple[Any, Any]:
    """(train, val) images the probe used: after its selection, not the split's."""
    counts = result.get("counts", {})
    used = result.get("images_used") or {
        part: (counts.get(part) or {}).get("images") for part in ("train", "val")}
    split = result.get("split", {})
    return (used.get("train") or split.get("train_images", "?"),
            used.get("val") or split.get("val_images", "?"))


def epochs_text(epochs: Any) -> str:
    """`30 epochs`, or `30 (normal), 12 (outlier) epochs` when fits differ."""
    if isinstance(epochs, dict):
        values = set(epochs.values())
        if len(values) == 1:
            return f"{values.pop()} epochs"
        return "epochs: " + ", ".join(f"{v} ({k})" for k, v in epochs.items())
    return f"{epochs} epochs"


def _caption(result: dict[str, Any]) -> str:
    train, val = used_images(result)
    parts = [f"{train} train / {val} val images used"]
    coverage = result.get("class_coverage")
    if coverage:
        parts.append(f"{coverage['train_classes']} classes in training, "
                     f"{coverage['val_classes']} in validation")
    if result.get("epochs_run"):
        parts.append(epochs_text(result["epochs_run"]))
    parts.append(f"{result['backend']} on {result['environment']['device']}")
    parts.append(human_seconds(result["elapsed_s"]))
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
