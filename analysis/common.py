"""Shared helpers of the analyses: opening stores, sampling rows, reading only
the arrays asked for, labelling stores, and writing figures with their data."""

from __future__ import annotations

import inspect
import re
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator

from vitreg.cache import Store, open_store, outlier_threshold
from vitreg.cache.attrs import provenance as store_provenance
from vitreg.cache.names import NORMS
from vitreg.core.errors import UsageError
from vitreg.core.files import write_json as core_write_json
from vitreg.core.numbers import COUNT_OR_ZERO, SEED, Range
from vitreg.core.options import Option, resolve
from vitreg.core.registry import RegistryError, add_entry

#: Colours of the stores, in the order they are given (matplotlib's tab10).
COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")

#: What every analysis returns: figures (PNG paths), their data and statistics.
Result = dict[str, Any]


#: Options every analysis takes (besides STORE... and --out); their defaults are
#: each `run_*` function's own (`register_analysis` reads them from its signature).
COMMON_OPTIONS: tuple[Option, ...] = (
    Option("images", help="Seeded sample of ok images per store (0: all), as in the study.",
           range=COUNT_OR_ZERO),
    Option("seed", help="Seed of the image sample.", range=SEED),
    Option("allow_partial", help="Use the rows written so far of an incomplete store.",
           type=bool),
    Option("block", help="Read this block's tokens, norms and attention (1 the first, -1 the "
           "last; default the last): stores extracted with --blocks.", type=int,
           range=Range(-4096, 4096, integer=True)),  # the store's depth is checked on open
)


def _wrote_first(result: Result, _: dict[str, Any]) -> str:
    return f"wrote {result['figures'][0]}" if result["figures"] else "wrote no figure"


@dataclass(frozen=True)
class Analysis:
    """One `vitreg analysis NAME` command, one kind a study plan may name, and one
    section of the report."""

    name: str
    run: Callable[..., Result]
    order: int  # place in the report and in `--help`
    title: str  # the report's section title
    help: str  # the command's help
    #: every option `run` takes (COMMON_OPTIONS first), defaults from its signature
    options: tuple[Option, ...] = ()
    #: the line the command prints: (result, options) -> text
    summary: Callable[[Result, dict[str, Any]], str] = _wrote_first

    def check(self, options: dict[str, Any]) -> dict[str, Any]:
        """Every option, `options` overlaid on the defaults, checked: an option this
        analysis does not take is refused, naming those it takes."""
        return resolve(self.options, options, what=f"analysis {self.name!r}")

    def call(self, stores: Sequence[str | Store], *, out: str | Path, **options: Any) -> Result:
        """`run` with `options` checked (`check`)."""
        return self.run(stores, out=out, **self.check(options))


#: Every analysis by name; `register_analysis` adds to it, `registered()` orders them.
ANALYSES: dict[str, Analysis] = {}


def register_analysis(name: str, *, order: int, title: str, help: str,
                      options: tuple[Option, ...] = (),
                      summary: Callable[[Result, dict[str, Any]], str] | None = None,
                      ) -> Callable[[Callable[..., Result]], Callable[..., Result]]:
    """Add `run_NAME(stores, *, out, <COMMON_OPTIONS and options>)` to `ANALYSES`: it
    becomes a command, a kind a study plan may name and a report section. Names are
    unique; the options must be exactly `run`'s keywords (`RegistryError`)."""

    def add(fn: Callable[..., Result]) -> Callable[..., Result]:
        extra = {"summary": summary} if summary else {}
        entry = Analysis(name, fn, order, title, help, _with_defaults(name, fn, options),
                         **extra)
        _check_shared(entry)
        add_entry(ANALYSES, name, entry, what="analysis")
        return fn

    return add


def _with_defaults(name: str, fn: Callable[..., Result],
                   options: tuple[Option, ...]) -> tuple[Option, ...]:
    """COMMON_OPTIONS and `options`, each with its default from `fn`'s signature."""
    declared = COMMON_OPTIONS + tuple(options)
    params = {p.name: p for p in inspect.signature(fn).parameters.values()
              if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "out"}
    names = [opt.name for opt in declared]
    if len(set(names)) != len(names) or set(names) != set(params):
        raise RegistryError(
            f"analysis {name!r}: its options {sorted(names)} must be the keywords of "
            f"{fn.__name__} besides `out`, {sorted(params)}, each once")
    return tuple(replace(opt, default=params[opt.name].default) for opt in declared)


def _check_shared(entry: Analysis) -> None:
    """An option two analyses take is one option (the report takes it once)."""
    mine = {opt.name: opt for opt in entry.options}
    for other in ANALYSES.values():
        if other.name == entry.name:
            continue  # a name taken twice: add_entry says so
        clash = [o.name for o in other.options if o.name in mine and mine[o.name] != o]
        if clash:
            raise RegistryError(f"analysis {entry.name!r}: option(s) {clash} differ from "
                                f"analysis {other.name!r}'s")


def unregister_analysis(name: str) -> None:
    """Remove analysis `name` (a test's or a plugin's)."""
    ANALYSES.pop(name, None)


def registered() -> list[Analysis]:
    """Every analysis in report order."""
    return sorted(ANALYSES.values(), key=lambda entry: (entry.order, entry.name))


def report_options() -> tuple[Option, ...]:
    """Every analysis's options, once each (the report takes them all)."""
    return tuple({opt.name: opt for entry in registered() for opt in entry.options}.values())


def open_stores(urls: Sequence[str | Store], *, allow_partial: bool = False,
                block: int | None = None) -> list[Store]:
    """Open each store (already opened ones pass through), at `block` when one is given."""
    if not urls:
        raise UsageError("give at least one store")
    return [(u if isinstance(u, Store) else open_store(str(u), allow_partial=allow_partial))
            .at_block(block) for u in urls]


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


def sample_outliers(
    store: Store, names: Sequence[str], images: int, seed: int,
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """A seeded sample's rows, those rows of `norms` and `names`, and which of their
    patch tokens are outliers by the store's threshold."""
    rows, data = read_sample(store, list(dict.fromkeys([NORMS, *names])), images, seed)
    patch = patch_part(data[NORMS], store)
    return rows, data, patch > threshold_for(store, patch, rows)


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
