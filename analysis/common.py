"""Shared helpers of the analyses: opening stores, sampling rows, reading only
the arrays asked for, labelling stores, and writing figures with their data."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator

from vitreg.cache import Store, open_store, outlier_threshold
from vitreg.cache.attrs import provenance as store_provenance
from vitreg.core.errors import UsageError, VitregError
from vitreg.core.files import write_json as core_write_json

#: Colours of the stores, in the order they are given (matplotlib's tab10).
COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")

#: What every analysis returns: figures (PNG paths), their data and statistics.
Result = dict[str, Any]


@dataclass(frozen=True)
class Analysis:
    """One `vitreg analysis NAME` command and one section of the report."""

    name: str
    run: Callable[..., Result]
    order: int  # place in the report and in `--help`
    title: str  # the report's section title
    help: str  # the command's help
    #: click options beyond those every analysis takes (the report takes them all)
    options: tuple[Callable, ...] = ()
    #: the line the command prints: (result, options) -> text
    summary: Callable[[Result, dict[str, Any]], str] = lambda result, _: \
        f"wrote {result['figures'][0]}"


#: Every analysis by name; `register_analysis` adds to it, `registered()` orders them.
ANALYSES: dict[str, Analysis] = {}


def register_analysis(name: str, *, order: int, title: str, help: str,
                      options: tuple[Callable, ...] = (),
                      summary: Callable[[Result, dict[str, Any]], str] | None = None,
                      ) -> Callable[[Callable[..., Result]], Callable[..., Result]]:
    """Add a `run_*` function to `ANALYSES`: it becomes a command and a report
    section. Names are unique."""

    def add(fn: Callable[..., Result]) -> Callable[..., Result]:
        if name in ANALYSES:
            raise VitregError(f"analysis {name!r} registered twice")
        extra = {"summary": summary} if summary else {}
        ANALYSES[name] = Analysis(name, fn, order, title, help, options, **extra)
        return fn

    return add


def registered() -> list[Analysis]:
    """Every analysis in report order."""
    return sorted(ANALYSES.values(), key=lambda entry: (entry.order, entry.name))


def open_stores(urls: Sequence[str | Store], *, allow_partial: bool = False) -> list[Store]:
    """Open each store (already opened ones pass through)."""
    if not urls:
        raise UsageError("give at least one store")
    return [u if isinstance(u, Store) else open_store(str(u), allow_partial=allow_partial)
            for u in urls]


def is_random(store: Store) -> bool:
    """True when the store was made with randomly initialised weights."""
    return str(store.meta.get("weights", "")).lower() == "random"


def store_labels(stores: Sequence[Store]) -> list[str]:
    """Unique legend names that say which store: model, the store's name (its
    tag and split, as a study names it), image size, images, registers, random
    weights."""
    labels = []
    for store in stores:
        meta = store.meta
        label = (f"{meta.get('model', '?')} · {store_tag(store)} · {meta.get('img_size', '?')} px"
                 f" · {store.counts()['ok']:,} img")
        if store.geometry.registers:
            label += f" · {store.geometry.registers} reg"
        if is_random(store):
            label += " · RANDOM WEIGHTS"
        labels.append(label)
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):
        if labels.count(label) > 1:
            seen[label] = seen.get(label, 0) + 1
            labels[i] = f"{label} #{seen[label]}"
    return labels


def store_tag(store: Store) -> str:
    """The store's own name: its folder or zip name without the suffix."""
    name = str(store.url).rstrip("/").rsplit("/", 1)[-1]
    for suffix in (".zarr", ".zip"):
        name = name.removesuffix(suffix)
    return name or "?"


def wrap(label: str, width: int = 34) -> str:
    """`label` broken into lines for figure titles and axis labels."""
    return textwrap.fill(label, width, break_long_words=True)


def plain_log_y(ax: Any) -> None:
    """A log y axis labelled in plain numbers: 1, 2, 5, 10, 20, 50, ...

    matplotlib's default mathtext labels of log axes were most of a figure's
    drawing time, and read poorly at small sizes.
    """
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.minorticks_off()


def sample_rows(store: Store, images: int, seed: int) -> np.ndarray:
    """`images` ok rows drawn without replacement with `seed`, sorted (all if 0 or more)."""
    ok = store.ok_rows()
    if images <= 0 or images >= ok.size:
        return ok
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(ok, size=images, replace=False))


def read_rows(store: Store, names: Sequence[str], rows: np.ndarray) -> dict[str, np.ndarray]:
    """The given rows of each named array, reading only the chunks that hold them."""
    return {name: store.take(name, rows) for name in names}


def read_sample(
    store: Store, names: Sequence[str], images: int, seed: int,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The rows of `sample_rows(store, images, seed)` and those rows of each named array."""
    rows = sample_rows(store, images, seed)
    return rows, read_rows(store, names, rows)


def patch_part(values: np.ndarray, store: Store) -> np.ndarray:
    """Drop the prefix tokens ([CLS], registers) of a (..., T) array."""
    return values[..., store.geometry.prefix:]


def threshold_for(store: Store, patch: np.ndarray, rows: np.ndarray) -> float:
    """The store's outlier threshold, from `patch` norms when they already cover every ok row."""
    if not store.complete and rows.size == store.counts()["ok"]:
        return outlier_threshold(patch)
    return store.threshold()


def as_grid(patch_values: np.ndarray, store: Store) -> np.ndarray:
    """Reshape (..., P) patch values into (..., gh, gw), row-major as timm orders them."""
    gh, gw = store.geometry.grid
    return patch_values.reshape(*patch_values.shape[:-1], gh, gw)


def slug(text: str) -> str:
    """A file-name-safe version of `text`."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def write_json(path: Path, data: Any) -> Path:
    """Write `data` (numpy values included) as JSON, atomically."""
    return core_write_json(path, data, indent=1, default=_plain)


def save_figure(fig: Figure, data: Any, path: Path, *, tight: bool = True) -> Path:
    """Write `fig` as PNG and `data` as JSON with the same stem; return the PNG path.

    `tight=False` keeps the figure's own layout: one draw instead of two.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight" if tight else None)
    write_json(path.with_suffix(".json"), data)
    return path


def provenance(store: Store) -> dict[str, Any]:
    """What the report shows about where a store came from."""
    meta = store.meta
    counts = store.counts()
    return {
        **store_provenance(store.url, meta),
        "img_size": meta.get("img_size"),
        "patch_size": meta.get("patch_size"),
        "grid": list(store.geometry.grid),
        "registers": store.geometry.registers,
        "precision": meta.get("precision"),
        "images_ok": counts["ok"],
        "images_failed": counts["failed"],
        "images_pending": counts["pending"],
        "complete": store.complete,
        "arrays": store.names,
    }
