"""Click commands on a store itself: `vitreg info` and `vitreg verify`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import click
import numpy as np
from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Column, Table
from rich.text import Text

from vitreg.boundary import cli_errors
from vitreg.core.errors import RunFailed, VitregError
from vitreg.core.files import human_bytes
from vitreg.core.scrub import scrub

from .layout import array_sizes
from .names import ERROR, KEY, STATUS
from .reader import Store, failure_summary
from .shardid import local_shard_path, shard_digest
from .store import remove_partials
from .writer import STATUS_FAILED, STATUS_OK, STATUS_PENDING

console = Console(soft_wrap=True)


def text(value: object) -> Text:
    """A store's value as one plain line: no rich markup, no control
    characters, no credentials of a URL (`core.scrub`)."""
    return Text(scrub(value, newlines=False))


def plain(value: object) -> str:
    """A stored value for a person: 4 significant digits, `none` for None."""
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:.4g}"
    return scrub(value, newlines=False)


def dims(shape: tuple) -> str:
    """`(4, 3254, 1024)` -> `4×3254×1024`: one word, never split across lines."""
    return "×".join(str(d) for d in shape) or "scalar"


def chunk_text(chunks: tuple, shape: tuple) -> str:
    """Rows per chunk when a chunk spans the rest of the array (the usual case)."""
    return f"{chunks[0]} rows" if tuple(chunks[1:]) == tuple(shape[1:]) else dims(chunks)


def store_table(store: Store) -> Table:
    """What the store holds and where it came from, one line per field."""
    meta, counts = store.meta, store.counts()
    threshold = (meta.get("outlier_threshold") or {}).get("value")
    head = Table(show_header=False, box=box.SIMPLE, pad_edge=False, show_edge=False)
    for key, value in [
        ("model", meta.get("model")), ("weights", meta.get("weights")),
        ("weights sha256", meta.get("weights_sha256")),
        ("image size", f"{meta.get('img_size')} px"),
        ("grid / registers", f"{dims(tuple(meta.get('grid') or ()))} / "
                             f"{meta.get('registers')}"),
        ("prefix tokens", ", ".join(map(str, meta["prefix_layout"])) or "none"
         if "prefix_layout" in meta else "[CLS], then the registers (schema < 1.6)"),
        ("attention", {"cls": "[CLS] query", "map": "pooling head's query", None: "none"}.get(
            meta.get("attention_query", "cls"), "?")),
        ("chosen blocks", ", ".join(str(b + 1) for b in meta.get("blocks") or []) or "none"),
        ("precision", meta.get("precision")), ("schema", meta.get("schema_version")),
        ("rows", f"{store.n_rows:,}: {counts['ok']:,} ok, {counts['failed']:,} failed, "
                 f"{counts['pending']:,} pending"),
        ("complete", "yes" if meta.get("complete") else "no"),
        ("outlier threshold", "not computed" if threshold is None else
         f"{threshold:.4g} (L2 norm: 98th percentile of the patch-token norms)"),
    ]:
        head.add_row(key, Text(plain(value)))
    if meta.get("weights") == "random":
        head.add_row("[bold red]WARNING[/]", "[bold red]random weights: values mean nothing[/]")
    return head


def arrays_table(store: Store, *, with_raw: bool = True) -> Table:
    """Each array's shape, dtype, chunking and bytes; `with_raw=False` leaves out
    the uncompressed size (a narrow terminal)."""
    columns = ["array", "shape", "dtype", "chunks", "on disk", *(["raw"] * with_raw), "ratio"]
    table = Table(*(Column(c, no_wrap=True, justify="right" if i > 3 else "left")
                    for i, c in enumerate(columns)), box=box.SIMPLE_HEAD, pad_edge=False,
                  show_edge=False, collapse_padding=True,
                  caption="ratio: uncompressed bytes / bytes on disk")
    total_stored = total_raw = 0
    for name, shape, dtype, stored, raw in array_sizes(store):
        total_stored, total_raw = total_stored + stored, total_raw + raw
        array = store.array(name)
        kind = "str" if array.dtype.kind in "OTU" else dtype
        table.add_row(text(name), dims(shape), kind, chunk_text(array.chunks, shape),
                      human_bytes(stored), *([human_bytes(raw) if raw else "-"] * with_raw),
                      f"{raw / stored:.3g}x" if stored and raw else "-")
    table.add_row("total", "", "", "", human_bytes(total_stored),
                  *([human_bytes(total_raw)] * with_raw),
                  f"{total_raw / total_stored:.3g}x" if total_stored else "-")
    return table


def run_info(url: str) -> None:
    store = Store(url, allow_partial=True)
    out = Console(soft_wrap=True)  # the terminal's width now (COLUMNS), not at import
    out.print(text(f"vitreg store {store.url}"), style="bold")  # a long URL stays one line
    out.print(store_table(store))
    out.print()
    for what, status in (("failed", STATUS_FAILED), ("warned", STATUS_OK)):
        for group in failure_summary(store._root, status=status):
            out.print(text(f"{what} {group['count']:,} row(s): {group['reason']} "
                           f"(e.g. {', '.join(group['keys'])})"))
    table = arrays_table(store)
    natural = Measurement.get(out, out.options.update_width(10_000), table).maximum
    if natural > out.width:  # no column may wrap: drop one instead
        table = arrays_table(store, with_raw=False)
    out.print(table)


@dataclass
class VerifyReport:
    problems: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_integrity(store: Store, report: VerifyReport) -> None:
    """Every chunk against its crc32c (schema 1.3); names each one that is
    missing (in a complete store), truncated or altered."""
    from .integrity import check_checksums, metadata_mismatches

    chunks = check_checksums(store._root, store.names, skip_missing=not store.complete)
    report.problems.extend(metadata_mismatches(store._root) + chunks.problems)
    if chunks.unchecked:
        report.notes.append(
            f"checksums absent (schema {store.meta.get('schema_version')}): "
            f"{', '.join(chunks.unchecked)} not checked for altered bytes"
        )
    report.notes.append(f"{chunks.checked} chunks, {human_bytes(chunks.bytes)} checked")


def run_verify(url: str) -> VerifyReport:
    """Read everything back: shapes, status values, finiteness of ok rows."""
    report = VerifyReport(removed=remove_partials(url))
    try:
        store = Store(url, allow_partial=True)
    except VitregError as exc:  # no store to read is verify's problem to report (exit 1)
        report.problems.append(str(exc))
        return report
    check_integrity(store, report)
    if report.problems:
        return report  # damaged chunks: reading the values back would only fail on them
    status = store.array(STATUS)[:]  # the array itself, not the attributes' summary
    if store.complete and not np.array_equal(status, store.status):
        report.problems.append("the attribute failed_rows disagrees with the status array")
    bad_status = ~np.isin(status, [STATUS_PENDING, STATUS_OK, STATUS_FAILED])
    if bad_status.any():
        report.problems.append(f"{int(bad_status.sum())} rows have an unknown status value")
    if store.complete and (status == STATUS_PENDING).any():
        report.problems.append("the store says it is complete but has pending rows")
    elif (status == STATUS_PENDING).any():
        report.problems.append(f"incomplete: {int((status == STATUS_PENDING).sum())} pending "
                               "row(s); rerun the extract command that made it to finish it")
    report.problems.extend(shard_problems(store))
    errors = store.array(ERROR)[:]
    failed_without_reason = (status == STATUS_FAILED) & (errors == "")
    if failed_without_reason.any():
        report.problems.append(f"{int(failed_without_reason.sum())} failed rows give no reason")
    numeric = [n for n in store.names if store.array(n).dtype.kind == "f"]
    for batch in store.batches(numeric):
        for name in numeric:
            finite = np.isfinite(batch[name].reshape(len(batch["row"]), -1)).all(1)
            for row in batch["row"][~finite]:
                report.problems.append(f"{name}: row {row} holds NaN or inf")
    return report


def shard_problems(store: Store) -> list[str]:
    """Recorded shards that are reachable here and no longer match their digest
    (schema 1.2), and keys of ok rows that occur twice."""
    problems = []
    shards = store.meta.get("shards") or []
    for shard, recorded in zip(shards, store.meta.get("shard_digests") or [None] * len(shards)):
        path = local_shard_path(shard.get("url", ""))
        if path is None or not recorded or recorded.startswith("keys-"):
            continue
        if shard_digest(path) != recorded:
            problems.append(f"shard {shard['url']} changed since the store was written "
                            "(its members differ): the rows may not be its samples")
    keys = Counter(str(k) for k in store.array(KEY)[:][store.ok_rows()])
    twice = [key for key, n in keys.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} key(s) occur in several ok rows (e.g. {twice[0]!r})")
    return problems


@click.command("info")
@cli_errors
@click.argument("store")
def info_command(store: str) -> None:
    """Model, weights, rows ok/failed/pending, arrays with shapes and bytes on disk."""
    run_info(store)


@click.command("verify")
@cli_errors
@click.argument("store")
def verify_command(store: str) -> None:
    """Read the whole store back; exit 1 on any problem."""
    report = run_verify(store)
    for path in report.removed:
        console.print(text(f"removed leftover of a killed write: {path}"))
    for note in report.notes:
        console.print(text(note))
    for problem in report.problems:
        console.print(Text("problem: ", style="red") + text(problem))
    if report.problems:
        raise RunFailed(f"{store}: {len(report.problems)} problem(s), listed above")
    console.print(text(f"{store}: ok"))


@click.command("pack")
@cli_errors
@click.argument("store")
@click.argument("out", type=click.Path(dir_okay=False))
def pack_command(store: str, out: str) -> None:
    """Write a complete STORE into one zip (members stored) that readers open directly."""
    from .pack import run_pack

    members = run_pack(store, out)
    console.print(f"wrote {out}: {members} files")
