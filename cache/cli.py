"""Click commands on a store itself: `vitreg info` and `vitreg verify`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import click
import numpy as np
from rich.console import Console
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


def run_info(url: str) -> None:
    store = Store(url, allow_partial=True)
    meta, counts = store.meta, store.counts()
    head = Table(title=text(f"vitreg store {store.url}"), show_header=False)
    for key, value in [
        ("model", meta.get("model")), ("weights", meta.get("weights")),
        ("weights sha256", meta.get("weights_sha256")), ("image size", meta.get("img_size")),
        ("grid / registers", f"{meta.get('grid')} / {meta.get('registers')}"),
        ("prefix tokens", ", ".join(map(str, meta["prefix_layout"])) or "none"
         if "prefix_layout" in meta else "[CLS], then the registers (schema < 1.6)"),
        ("attention", {"cls": "[CLS] query", "map": "pooling head's query", None: "none"}.get(
            meta.get("attention_query", "cls"), "?")),
        ("chosen blocks", ", ".join(str(b + 1) for b in meta.get("blocks") or []) or "none"),
        ("precision", meta.get("precision")), ("schema", meta.get("schema_version")),
        ("rows", f"{store.n_rows}: {counts['ok']} ok, {counts['failed']} failed, "
                 f"{counts['pending']} pending"),
        ("complete", meta.get("complete")),
        ("outlier threshold", (meta.get("outlier_threshold") or {}).get("value")),
    ]:
        head.add_row(key, text(value))
    if meta.get("weights") == "random":
        head.add_row("[bold red]WARNING[/]", "[bold red]random weights: values mean nothing[/]")
    console.print(head)
    for what, status in (("failed", STATUS_FAILED), ("warned", STATUS_OK)):
        for group in failure_summary(store._root, status=status):
            console.print(text(f"{what} {group['count']} row(s): {group['reason']} "
                               f"(e.g. {', '.join(group['keys'])})"))
    sizes = array_sizes(store)
    width = max((len(name) for name, *_ in sizes), default=5)
    table = Table(Column("array", no_wrap=True, min_width=width), "shape", "dtype", "chunks",
                  "on disk", "raw", "ratio")
    total_stored = total_raw = 0
    for name, shape, dtype, stored, raw in sizes:
        total_stored, total_raw = total_stored + stored, total_raw + raw
        ratio = f"{raw / stored:.2f}x" if stored and raw else "-"
        table.add_row(text(name), str(shape), dtype, str(store.array(name).chunks),
                      human_bytes(stored),
                      human_bytes(raw) if raw else "-", ratio)
    table.add_row("total", "", "", "", human_bytes(total_stored), human_bytes(total_raw),
                  f"{total_raw / total_stored:.2f}x" if total_stored else "-")
    console.print(table)


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
