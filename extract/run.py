"""`run_extract`: shards -> preprocessing -> model + taps -> store, resumable."""

from __future__ import annotations

import os
import platform
import threading
import time
from queue import Queue
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import numpy as np
import timm
import torch
import zarr
from torch.utils.data import DataLoader

from vitreg import __version__
from vitreg.runtime import tune_allocator
from vitreg.cache import (
    STATUS_FAILED, STATUS_OK, ChunkWriter, ConfigMismatchError, VitregError, arrays_for,
    default_chunk_rows, ensure_store, mark_complete, open_group, stored_arrays,
)
from vitreg.cache.schema import parse_token_mode
from vitreg.cache.reader import failure_summary
from vitreg.cache.store import check_out, delete_store
from vitreg.core.errors import InputError, UsageError

from .checks import check_device, check_model
from .capture import Capture, resolve_precision, to_numpy
from .data import ShardStream
from .distributed import Ranks, barrier, detect_ranks, row_range
from .model import LoadedModel, build_model, file_sha256
from .plan import Plan, check_shard_args, no_samples_message, plan_shards
from .progress import progress_bar
from .transforms import eval_transform, transform_kwargs

#: Attributes that define what a store holds; a rerun must match them all.
CONFIG_KEYS = (
    "model", "weights", "weights_sha256", "img_size", "dynamic_img_size", "precision",
    "preprocessing", "token_mode", "tokens_dtype", "with", "shards", "n_rows", "seed",
    "keys_file",
)
#: Checked on resume too, by `shard_diffs`: absent from stores of schema 1.1.
SHARD_DIGESTS = "shard_digests"


@dataclass
class Summary:
    store: str
    rows: int
    ok: int
    failed: int
    processed: int
    seconds: float
    loop_seconds: float = 0.0  # decode + model + write, without setup and counting
    writer_waited: float = 0.0  # time the loop spent blocked on the writer
    damaged_shards: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rank: int = 0
    world: int = 1
    row_range: tuple[int, int] = (0, 0)
    #: failed rows grouped by reason: {"reason", "count", "keys"} (examples)
    failures: list[dict[str, Any]] = field(default_factory=list)
    #: ok rows with a warning (a label that could not be read), grouped the same way
    warnings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.processed / self.loop_seconds if self.loop_seconds else 0.0


def resolve_device(device: str, ranks: Ranks | None = None) -> torch.device:
    """`auto` is CUDA when there is one (under torchrun, the local rank's GPU)."""
    dev = check_device(device)
    if dev is not None:
        return dev
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", ranks.local_rank if ranks else 0)


def store_attrs(name: str, loaded: LoadedModel, *, precision: str, token_mode: str,
                tokens_dtype: str, with_options: list[str], shards: list[dict[str, Any]],
                n_rows: int, seed: int, shard_digests: list[str | None]) -> dict[str, Any]:
    geom = loaded.geometry
    weights_file = None
    if loaded.weights not in ("pretrained", "random"):
        weights_file = {"path": loaded.weights, "sha256": file_sha256(loaded.weights)}
    return {
        "model": name,
        "pretrained_cfg": _model_name(loaded),
        "weights": loaded.weights,
        "weights_sha256": loaded.weights_sha256,
        "weights_file": weights_file,
        "img_size": geom.img_size,
        "dynamic_img_size": loaded.dynamic_img_size,
        "patch_size": loaded.patch_size,
        "grid": list(geom.grid),
        "prefix_tokens": geom.prefix,
        "registers": geom.registers,
        "embed_dim": geom.dim,
        "depth": geom.depth,
        "heads": loaded.heads,
        "precision": precision,
        "preprocessing": transform_kwargs(loaded.data_config),
        "preprocessing_preset": loaded.preset,
        "token_mode": token_mode,
        "tokens_dtype": tokens_dtype,
        "with": sorted(with_options),
        "shards": shards,
        SHARD_DIGESTS: shard_digests,
        "n_rows": n_rows,
        "seed": seed,
        "versions": {
            "vitreg": __version__, "timm": timm.__version__, "torch": torch.__version__,
            "zarr": zarr.__version__, "python": platform.python_version(),
        },
    }


def _model_name(loaded: LoadedModel) -> str:
    cfg = loaded.model.pretrained_cfg
    tag = cfg.get("tag")
    return f"{cfg['architecture']}.{tag}" if tag else cfg["architecture"]


def check_config(old: dict[str, Any], attrs: dict[str, Any]) -> None:
    """Refuse to resume into a store written with another configuration."""
    diffs = [
        f"{key}: store has {old.get(key)!r}, this run {attrs.get(key)!r}"
        for key in CONFIG_KEYS if key != "shards" and old.get(key) != attrs.get(key)
    ]
    diffs += shard_diffs(old.get("shards") or [], attrs["shards"], old.get(SHARD_DIGESTS),
                         attrs[SHARD_DIGESTS])
    if diffs:
        raise ConfigMismatchError(
            "the store was written with a different configuration:\n  " + "\n  ".join(diffs)
            + "\nuse another --out, or --overwrite to start afresh"
        )


def shard_diffs(old: list[dict[str, Any]], new: list[dict[str, Any]],
                old_digests: list[str | None] | None, new_digests: list[str | None]) -> list[str]:
    """How the input shards differ from those the store was started with.
    A store of schema 1.1 recorded no digests: only urls and counts compare."""
    if [s["url"] for s in old] != [s["url"] for s in new]:
        return [f"shards: store has {[s['url'] for s in old]}, this run {[s['url'] for s in new]}"]
    diffs = []
    for was, now, was_id, now_id in zip(old, new, old_digests or [None] * len(new), new_digests):
        if was.get("samples") != now["samples"]:
            diffs.append(f"shard {now['url']}: {was.get('samples')} samples when the store was "
                         f"started, {now['samples']} now")
        elif was_id is not None and was_id != now_id:
            diffs.append(f"shard {now['url']} was rewritten since the store was started "
                         "(its members' names, sizes or order differ)")
    return diffs


def check_finished_keys(root: zarr.Group, planned: list[str]) -> None:
    """The keys of the rows already written are those the plan puts there."""
    done = np.flatnonzero(root["status"][:] != 0)
    if not len(done):
        return
    stored = root["key"].get_orthogonal_selection((done,))
    wrong = [int(r) for r, key in zip(done, stored) if key != planned[r]]
    if wrong:
        row = wrong[0]
        raise ConfigMismatchError(
            f"{len(wrong)} finished row(s) of the store hold other samples than the shards "
            f"give now (row {row}: store {stored[list(done).index(row)]!r}, shards "
            f"{planned[row]!r}); the shards changed: use another --out, or --overwrite")


def prepare_store(out: str, attrs: dict[str, Any], loaded: LoadedModel, *,
                  chunk_rows: int | None, overwrite: bool) -> zarr.Group:
    """Open the store to resume it, creating whatever is missing."""
    n_rows = attrs["n_rows"]
    _, sample_k = parse_token_mode(attrs["token_mode"])
    if overwrite:
        delete_store(out)
    ensure_store(
        out, geometry=loaded.geometry, n_rows=n_rows, attrs=attrs, sample_k=sample_k,
        specs=arrays_for(attrs["with"], attrs["token_mode"], attrs["tokens_dtype"]),
        chunk_rows=chunk_rows or balanced_chunk_rows(default_chunk_rows(loaded.geometry), n_rows),
        check=lambda old: check_config(old, attrs),
    )
    return open_group(out, mode="r+")


def balanced_chunk_rows(target: int, n_rows: int) -> int:
    """At most `target` rows per chunk, spread evenly: zarr stores edge chunks
    whole, so 100 rows in chunks of 64 would store 128 (50 + 50 stores 100)."""
    chunks = -(-n_rows // target)
    return -(-n_rows // chunks)


def open_for_ranks(out: str, attrs: dict[str, Any], loaded: LoadedModel, ranks: Ranks, *,
                   chunk_rows: int | None, overwrite: bool) -> zarr.Group:
    """Under torchrun rank 0 prepares the store while the others wait;
    independent jobs each prepare it (idempotent), and may not overwrite."""
    if ranks.world > 1 and overwrite and not ranks.torchrun:
        raise VitregError("--overwrite with --world-size > 1 would delete other jobs' rows; "
                          "delete the store once before starting the jobs")
    if ranks.torchrun and not ranks.leader:
        barrier(ranks)
        root = open_group(out, mode="r+")
        check_config(root.attrs["vitreg"], attrs)
        return root
    root = prepare_store(out, attrs, loaded, chunk_rows=chunk_rows, overwrite=overwrite)
    barrier(ranks)
    return root


def run_extract(
    *, shards: list[str], model: str, out: str, weights: str = "pretrained",
    img_size: int | None = None, batch_size: int = 32, precision: str = "auto",
    device: str = "auto", workers: int = 0, limit: int | None = None, tokens: str = "all",
    with_options: list[str] | tuple[str, ...] = (), dtype: str = "float16",
    overwrite: bool = False, seed: int = 42, chunk_rows: int | None = None,
    progress: bool = True, rank: int | None = None, world_size: int | None = None,
    preprocess: str = "timm", crop_pct: float | None = None, interpolation: str | None = None,
    keys: str | None = None,
) -> Summary:
    """Extract every sample of `shards` through `model` into the store `out`.

    With several processes (torchrun, or `rank`/`world_size` for independent
    jobs) each writes its own chunk-aligned range of rows into the one store.
    `preprocess` names an evaluation protocol (`transforms.PRESETS`);
    `crop_pct` and `interpolation` (timm's names) override it. `keys`, a file
    of sample keys, makes the rows those keys in the file's order.
    """
    tune_allocator()
    start = time.perf_counter()
    ranks = detect_ranks(rank, world_size)
    with_options = sorted(set(with_options))
    dev = resolve_device(device, ranks)
    check_out(out, overwrite=overwrite)
    check_model(model, img_size)
    check_shard_args(shards)
    plan = plan_shards(shards, limit=limit, keys=keys)
    if plan.n_rows == 0:
        raise InputError(no_samples_message(plan))
    loaded = build_model(model, weights=weights, img_size=img_size, seed=seed,
                         preprocess=preprocess, crop_pct=crop_pct, interpolation=interpolation)
    check_token_mode(tokens, loaded.geometry)
    precision = resolve_precision(precision, dev)
    attrs = store_attrs(model, loaded, precision=precision, token_mode=tokens,
                        tokens_dtype=dtype, with_options=with_options,
                        shards=plan.shard_info(), n_rows=plan.n_rows, seed=seed,
                        shard_digests=plan.digests())
    attrs["keys_file"] = {"path": keys, "sha256": file_sha256(keys)} if keys else None
    root = open_for_ranks(out, attrs, loaded, ranks, chunk_rows=chunk_rows, overwrite=overwrite)
    check_finished_keys(root, plan.keys())
    first, last = row_range(plan.n_rows, root["status"].chunks[0], ranks)
    todo = root["status"][:] == 0
    todo[:first] = todo[last:] = False
    loop_start = time.perf_counter()
    processed, waited = _extract_rows(
        root, loaded, plan, todo=todo, rows=(first, last), device=dev, precision=precision,
        with_options=with_options, token_mode=tokens, batch_size=batch_size, workers=workers,
        seed=seed, progress=progress and ranks.leader,
    )
    loop_seconds = time.perf_counter() - loop_start
    barrier(ranks)
    ok, failed = mark_complete(root, shared=ranks.world > 1 and not ranks.torchrun)
    return Summary(
        store=out, rows=plan.n_rows, ok=ok, failed=failed, processed=processed,
        seconds=time.perf_counter() - start, loop_seconds=loop_seconds, writer_waited=waited,
        notes=loaded.notes, damaged_shards=plan.damaged(), rank=ranks.rank, world=ranks.world,
        row_range=(first, last), failures=failure_summary(root),
        warnings=failure_summary(root, status=STATUS_OK),
    )


def check_token_mode(tokens: str, geometry) -> None:
    kind, k = parse_token_mode(tokens)
    if kind == "sampled" and k > geometry.patches:
        raise UsageError(f"--tokens {tokens} asks for {k} of only {geometry.patches} patch tokens")


def _extract_rows(root: zarr.Group, loaded: LoadedModel, plan: Plan, *, todo: np.ndarray,
                  rows: tuple[int, int], device: torch.device, precision: str,
                  with_options: list[str], token_mode: str, batch_size: int, workers: int,
                  seed: int, progress: bool) -> tuple[int, float]:
    """Decode, run and write every row in `todo`; return how many, and the
    seconds spent waiting on the writer."""
    count = int(todo.sum())
    if count == 0:
        return 0, 0.0
    stream = ShardStream(
        plan.urls, offsets=plan.offsets, todo=todo, batch_size=batch_size,
        img_size=loaded.geometry.img_size, transform=eval_transform(loaded.data_config),
        duplicates=plan.duplicates, spans=plan.spans, selection=plan.selection,
        decode_threads=1 if workers else usable_cores(),
    )
    loader = DataLoader(
        stream, batch_size=None, num_workers=workers, pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None, persistent_workers=False,
    )
    names = stored_arrays(root)
    dtypes = {name: str(root[name].dtype) for name in names}
    capture = Capture(loaded, device=device, precision=precision, with_options=with_options,
                      token_mode=token_mode, seed=seed)
    writer = ChunkWriter(root, names, rows=rows)
    try:
        with progress_bar(count, enabled=progress) as advance:
            for batch in (prefetched(loader) if overlap_decoding(workers, device) else loader):
                writer.put(batch["row"].numpy(), _batch_values(batch, capture, dtypes))
                advance(len(batch["row"]))
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return count, writer.waited


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def overlap_decoding(workers: int, device: torch.device) -> bool:
    """With no worker processes, decode in a background thread while the model
    runs only if the model does not need the cores: on a GPU. On a CPU the
    forward pass uses every core, and a decode thread beside it stalls torch's
    OpenMP threads; decoding each batch on all cores between forward passes
    ran closer to the bare forward (bench/bench_extract.py, "w0 overlapped")."""
    return workers == 0 and device.type != "cpu"


def prefetched(batches: Iterable[Any], depth: int = 2) -> Iterator[Any]:
    """Iterate `batches` in a background thread, `depth` ahead (PIL and torch
    both release the GIL in their C code)."""
    queue: Queue = Queue(maxsize=depth)
    done = object()

    def produce() -> None:
        try:
            for batch in batches:
                queue.put(batch)
        except BaseException as exc:  # handed to the consumer, raised there
            queue.put(exc)
        queue.put(done)

    threading.Thread(target=produce, daemon=True, name="vitreg-decode").start()
    while (item := queue.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item


def _batch_values(batch: dict[str, Any], capture: Capture,
                  dtypes: dict[str, str]) -> dict[str, np.ndarray]:
    """The arrays of one batch, with status and error filled in per row."""
    values = to_numpy(capture(batch["image"], batch["row"].numpy()), dtypes)
    finite = values.pop("finite")
    errors = np.array(batch["error"], dtype=object)
    bad_values = (errors == "") & ~finite
    errors[bad_values] = "model: NaN or inf in the outputs"
    failed = errors != ""
    warnings = np.array(batch["warning"], dtype=object)
    errors[~failed & (warnings != "")] = warnings[~failed & (warnings != "")]
    if failed.any():
        for value in values.values():
            value[failed] = 0  # a failed row holds fill values only
    values["status"] = np.where(failed, STATUS_FAILED, STATUS_OK).astype(np.uint8)
    values["error"] = errors
    values["key"] = np.array(batch["key"], dtype=object)
    values["label"] = batch["label"].numpy()
    return values
