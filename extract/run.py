"""`run_extract`: shards -> preprocessing -> model + taps -> store, resumable."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import timm
import torch
from torch.utils.data import DataLoader

from vitreg.cache import STATUS_FAILED, STATUS_OK, Geometry, VitregError, arrays_for
from vitreg.cache.attrs import root_attrs
from vitreg.cache.layout import row_range
from vitreg.cache.names import ERROR, KEY, LABEL, STATUS
from vitreg.cache.schema import parse_token_mode
from vitreg.cache.store import check_out
from vitreg.cache.target import WriteTarget, open_for_write
from vitreg.core.device import resolve_device
from vitreg.core.errors import InputError, UsageError
from vitreg.core.files import file_sha256
from vitreg.core.prefetch import prefetched
from vitreg.core.runtime import tune_allocator, usable_cores

from .capture import Capture, apply_options, resolve_precision
from .checks import PREFETCH, check_model, check_shared_memory
from .config import ExtractConfig
from .costs import Costs, measure_costs
from .distributed import Ranks, barrier, final_barrier, final_timeout, ranks_of
from .gpudecode import DEVICE_DECODE, device_images
from .model import LoadedModel, build_model
from .plan import (
    Plan,
    check_shard_args,
    no_samples_message,
    plan_shards,
    plan_stream,
)
from .progress import progress_bar
from .step import Staged, Step
from .transforms import transform_kwargs


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
    phases: dict[str, float] = field(default_factory=dict)  # `LoopStats.phases`
    batch_ends: list[tuple[float, int]] = field(default_factory=list)  # `LoopStats.batch_ends`
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


@dataclass
class Setup:
    """What a run decides before its first batch: the device, the plan of rows,
    the model and the loop's settings (`auto` resolved)."""

    device: torch.device
    plan: Plan
    loaded: LoadedModel
    precision: str
    workers: int
    batch_size: int
    costs: Costs | None = None


def store_attrs(config: ExtractConfig, setup: Setup) -> dict[str, Any]:
    """The root attributes of the store this run writes (`cache.attrs` checks them);
    `ExtractConfig`'s `records` say which attributes each option lands in."""
    loaded, geom, keys_file = setup.loaded, setup.loaded.geometry, config.keys_file
    weights_file = None
    if loaded.weights not in ("pretrained", "random"):
        weights_file = {"path": loaded.weights, "sha256": file_sha256(loaded.weights)}
    return root_attrs(
        model=config.model, pretrained_cfg=_pretrained_cfg(loaded), weights=loaded.weights,
        weights_sha256=loaded.weights_sha256, weights_file=weights_file,
        img_size=geom.img_size, dynamic_img_size=loaded.dynamic_img_size,
        patch_size=loaded.patch_size, grid=list(geom.grid), prefix_tokens=geom.prefix,
        registers=geom.registers, embed_dim=geom.dim, depth=geom.depth, heads=loaded.heads,
        prefix_layout=list(geom.layout), attention_query=loaded.adapter.query(),
        blocks=list(geom.chosen) or None,
        precision=setup.precision, preprocessing=transform_kwargs(loaded.data_config),
        preprocessing_preset=loaded.preset, token_mode=config.token_mode,
        tokens_dtype=config.tokens_dtype, shards=setup.plan.shard_info(),
        shard_digests=setup.plan.digests(), n_rows=setup.plan.n_rows, seed=config.seed,
        keys_file={"path": keys_file, "sha256": file_sha256(keys_file)} if keys_file else None,
        versions={"timm": timm.__version__, "torch": torch.__version__},
        decode=DEVICE_DECODE if config.decode == "gpu" else None,
        **{"with": list(config.with_options)},
    )


def _pretrained_cfg(loaded: LoadedModel) -> str:
    cfg = loaded.model.pretrained_cfg
    tag = cfg.get("tag")
    return f"{cfg['architecture']}.{tag}" if tag else cfg["architecture"]


def open_for_ranks(out: str, attrs: dict[str, Any], loaded: LoadedModel, ranks: Ranks, *,
                   chunk_rows: int | None, overwrite: bool) -> WriteTarget:
    """Under torchrun rank 0 prepares the store while the others wait;
    independent jobs each prepare it (idempotent), and may not overwrite."""
    if ranks.world > 1 and overwrite and not ranks.torchrun:
        raise VitregError("--overwrite with --world-size > 1 would delete other jobs' rows; "
                          "delete the store once before starting the jobs")
    leader = not ranks.torchrun or ranks.leader
    if not leader:
        barrier(ranks)
    target = open_for_write(
        out, geometry=loaded.geometry, attrs=attrs, chunk_rows=chunk_rows, overwrite=overwrite,
        specs=arrays_for(attrs["with"], attrs["token_mode"], attrs["tokens_dtype"],
                         query=attrs["attention_query"], chosen=bool(attrs["blocks"])),
        create=leader, rank=ranks.rank, world=ranks.world)
    if leader:
        barrier(ranks)
    return target


def run_extract(config: ExtractConfig | None = None, /, **options: Any) -> Summary:
    """Extract every sample of `config.shards` through `config.model` into the
    store `config.out` (`ExtractConfig` says what each option does).

    `options` are `ExtractConfig`'s fields, to build one (`run_extract(shards=...,
    model=..., out=...)`) or to change `config`'s; a misspelt name is a TypeError.
    With several processes (torchrun, or `rank`/`world_size` for independent
    jobs) each writes its own chunk-aligned range of rows into the one store.
    """
    config = config.replace(**options) if config is not None else ExtractConfig(**options)
    tune_allocator()
    start = time.perf_counter()
    with ranks_of(config.rank, config.world_size) as ranks:  # ends the process group it starts
        setup = prepare(config, ranks)
        target = open_for_ranks(config.out, store_attrs(config, setup), setup.loaded, ranks,
                                chunk_rows=config.chunk_rows, overwrite=config.overwrite)
        target.check_keys(setup.plan.keys())
        loop_start = time.perf_counter()
        stats = _extract_rows(target, config, setup, progress=config.progress and ranks.leader)
        loop_seconds = time.perf_counter() - loop_start
        final_barrier(ranks, final_timeout(largest_range(setup.plan.n_rows, target, ranks.world),
                                           stats.rows, loop_seconds))
        summary = summarize(config.out, target, setup, ranks, stats)
        summary.seconds, summary.loop_seconds = time.perf_counter() - start, loop_seconds
        return summary


def prepare(config: ExtractConfig, ranks: Ranks) -> Setup:
    """Check the destination, plan the rows, build the model and choose the
    loop's settings (measuring the decode and model costs on a CPU)."""
    dev = resolve_device(config.device, local_rank=ranks.local_rank)
    check_out(config.out, overwrite=config.overwrite)
    plan, loaded = plan_and_build(config)
    costs = measure_costs(plan, loaded) if dev.type == "cpu" and config.workers != 0 and \
        plan.n_rows >= WORKER_ROWS else None
    workers, batch_size = loop_settings(
        config.workers, config.batch_size, dev, loaded.geometry,
        announce=config.progress and ranks.leader, costs=costs, ranks_on_node=ranks.local_world)
    check_shared_memory(workers, batch_size * 3 * loaded.geometry.img_size ** 2,
                        ranks_on_node=ranks.local_world)
    return Setup(device=dev, plan=plan, loaded=loaded,
                 precision=resolve_precision(config.precision, dev), workers=workers,
                 batch_size=batch_size, costs=costs)


def summarize(out: str, target: WriteTarget, setup: Setup, ranks: Ranks,
              stats: LoopStats) -> Summary:
    """The run's `Summary` (its times are the caller's to fill in).

    Completion reads the whole `status` and `norms`: under torchrun the leader
    alone does it; the other ranks report their own rows."""
    follower = ranks.torchrun and not ranks.leader
    ok, failed = target.own_counts() if follower else \
        target.finish(shared=ranks.world > 1 and not ranks.torchrun)
    return Summary(
        store=out, rows=setup.plan.n_rows, ok=ok, failed=failed, processed=stats.rows,
        seconds=0.0, writer_waited=stats.waited, phases=stats.phases,
        batch_ends=stats.batch_ends, notes=setup.loaded.notes,
        damaged_shards=setup.plan.damaged(), rank=ranks.rank, world=ranks.world,
        row_range=target.rows, failures=target.failures(own=follower),
        warnings=target.failures(status=STATUS_OK, own=follower),
    )


def largest_range(n_rows: int, target: WriteTarget, world: int) -> int:
    """Rows of the largest writer's range (they differ by a file at most)."""
    sizes = [stop - start for start, stop in
             (row_range(n_rows, target.chunk_rows, rank, world) for rank in range(world))]
    return max(sizes)


def plan_and_build(config: ExtractConfig) -> tuple[Plan, LoadedModel]:
    """Check the options, count the shards' samples and build the model: what a
    run and a dry run both do before any batch."""
    check_model(config.model, config.img_size)
    check_shard_args(list(config.shards))
    plan = plan_shards(list(config.shards), limit=config.limit, keys=config.keys_file)
    if plan.n_rows == 0:
        raise InputError(no_samples_message(plan))
    loaded = build_model(config.model, weights=config.weights, img_size=config.img_size,
                         seed=config.seed, preprocess=config.preprocess,
                         crop_pct=config.crop_pct, interpolation=config.interpolation)
    check_token_mode(config.token_mode, loaded.geometry)
    apply_options(loaded, list(config.with_options), config.blocks)
    return plan, loaded


#: A CPU run of fewer rows decodes without worker processes whatever the
#: model: starting them (each forks and opens its shards) outweighs the gain
#: (one-block model, 2 cores: 200 and 500 images ran at 313 and 372 img/s
#: without workers against 298 and 325 with 2; 2,000 at 361 against 380).
WORKER_ROWS = 1000

#: Batch size on a CPU: the forward pass is the limit, and larger batches
#: only raise the memory.
CPU_BATCH = 32


def loop_settings(workers: int | str, batch_size: int | None, device: torch.device,
                  geometry: Geometry, *, announce: bool = False,
                  costs: Costs | None = None, ranks_on_node: int = 1) -> tuple[int, int]:
    """`--workers auto` and an unset `--batch-size`, chosen for the device.

    On a CPU, from `costs` (measured on the first samples; without them, the
    forward pass is taken to cost more): a decode-bound model gets a decode
    worker per core (torch then runs on the cores the workers leave,
    `loop_threads`); a forward-bound one none (the forward pass needs
    every core; decoding runs on all of them between batches). Batches of 32.
    On a GPU: a decode worker per core but one (the main process feeds the
    device), and the largest power-of-two batch, at most 256, whose
    activations fit in a quarter of the GPU's memory. `ranks_on_node` ranks
    (torchrun's LOCAL_WORLD_SIZE) share the cores: each gets its share (8
    ranks on 16 cores: 2 cores, so 1 worker each, not 15).
    """
    chosen = []
    if workers == "auto":
        cores = max(1, usable_cores() // max(1, ranks_on_node))
        workers = (cores if costs and costs.decode_bound else 0) \
            if device.type == "cpu" else max(1, min(cores - 1, 16))
        chosen.append(f"{workers} decode worker(s)")
    if batch_size is None:
        batch_size = CPU_BATCH if device.type != "cuda" else cuda_batch_size(device, geometry)
        chosen.append(f"batch size {batch_size}")
    if announce and (chosen or costs):
        parts = [str(costs)] if costs else []
        threads = loop_threads(int(workers), device, costs)
        if threads is not None:
            parts.append(f"torch on {threads} thread(s) beside the workers")
        if chosen:
            parts.append(f"{', '.join(chosen)} (auto; set --workers / --batch-size to choose)")
        print(f"vitreg extract on {device}: {'; '.join(parts)}", file=sys.stderr)
    return int(workers), batch_size


def cuda_batch_size(device: torch.device, geometry: Geometry, most: int = 256) -> int:
    """A power of two <= `most` whose forward activations fit in a quarter of
    the device's memory: a block holds about 12 (T, D) float32 tensors per image
    at its peak (MLP hidden 4D, q/k/v, residuals), plus the stored outputs."""
    total = torch.cuda.get_device_properties(device).total_memory
    per_image = 16 * geometry.tokens * geometry.dim * 4 + geometry.tokens ** 2 * 4
    batch = most
    while batch > 1 and batch * per_image > total // 4:
        batch //= 2
    return batch


def check_token_mode(token_mode: str, geometry: Geometry) -> None:
    kind, k = parse_token_mode(token_mode)
    if kind == "sampled" and k > geometry.patches:
        raise UsageError(f"--tokens {token_mode} asks for {k} of only {geometry.patches} "
                         "patch tokens")


@dataclass
class LoopStats:
    """What the loop of one run did, for `Summary` and `bench/gpu`."""

    rows: int = 0
    #: seconds the loop spent blocked on the writer: its back-pressure, and
    #: staging buffers it was still writing in place when the step needed them
    waited: float = 0.0
    #: host seconds per part of the loop: "input" (waiting for decoded
    #: batches), "launch" (queueing the device step), "event" (waiting for
    #: the device and the copies), "put" (handing rows to the writer), "held"
    #: (waiting for the writer to release staging buffers)
    phases: dict[str, float] = field(default_factory=dict)
    #: (time.perf_counter(), rows) each time a batch was handed to the writer
    batch_ends: list[tuple[float, int]] = field(default_factory=list)


def _extract_rows(target: WriteTarget, config: ExtractConfig, setup: Setup, *,
                  progress: bool) -> LoopStats:
    """Decode, run and write every pending row of the writer's range."""
    todo = target.pending()
    stats = LoopStats(rows=int(todo.sum()))
    if stats.rows == 0:
        return stats
    device, loaded, workers = setup.device, setup.loaded, setup.workers
    loader = DataLoader(
        plan_stream(setup.plan, loaded, todo, setup.batch_size, raw=config.decode == "gpu",
                    decode_threads=1 if workers else usable_cores()),
        batch_size=None, num_workers=workers, pin_memory=device.type == "cuda",
        prefetch_factor=PREFETCH if workers else None, persistent_workers=False,
    )
    capture = Capture(loaded, device=device, precision=setup.precision,
                      with_options=list(config.with_options), token_mode=config.token_mode,
                      seed=config.seed)
    step = Step(capture, target.dtypes)
    writer = target.writer(batch_rows=setup.batch_size)
    try:
        with progress_bar(stats.rows, enabled=progress) as advance, \
                intra_op_threads(loop_threads(workers, device, setup.costs)):
            batches = prefetched(loader, name="vitreg-decode") \
                if overlap_decoding(workers, device) else loader
            on_device = (lambda b: device_images(b, loaded.data_config, device)) \
                if config.decode == "gpu" else None
            _run_batches(batches, step, writer, stats, advance, on_device)
            step.release_all()
    except BaseException:
        writer.abort()
        raise
    writer.close()
    stats.waited = writer.waited + step.times.held
    stats.phases.update(launch=step.times.launch, event=step.times.event, held=step.times.held)
    return stats


def _run_batches(batches, step: Step, writer, stats: LoopStats, advance,
                 on_device: Callable[[dict[str, Any]], torch.Tensor] | None = None) -> None:
    """Batch i+1 is queued on the device before batch i's host work; batch
    i's rows are written in place from its staging buffers (lent). With
    `on_device` (`--decode gpu`), each batch's images are decoded by it."""
    stats.phases.update(input=0.0, put=0.0, decode=0.0)
    in_flight: tuple[Staged, dict[str, Any]] | None = None
    source = iter(batches)
    while True:
        start = time.perf_counter()
        batch = next(source, None)
        stats.phases["input"] += time.perf_counter() - start
        if batch is None:
            break
        if on_device is not None:
            start = time.perf_counter()
            batch["image"] = on_device(batch)
            stats.phases["decode"] += time.perf_counter() - start
        meta = host_meta(batch)
        launched = step.launch(batch["image"], meta["row"]), meta
        if in_flight is not None:
            advance(_write_batch(step, writer, *in_flight, stats))
        in_flight = launched
    if in_flight is not None:
        advance(_write_batch(step, writer, *in_flight, stats))


def host_meta(batch: dict[str, Any]) -> dict[str, Any]:
    """What the host needs of a batch besides its images: rows, labels, keys,
    errors and warnings, as NumPy arrays and lists (the loader's tensors are
    on the host already)."""
    return {"row": batch["row"].numpy(), LABEL: batch[LABEL].numpy(),
            KEY: batch[KEY], ERROR: batch[ERROR], "warning": batch["warning"]}


def _write_batch(step: Step, writer, staged: Staged, meta: dict[str, Any],
                 stats: LoopStats) -> int:
    values = batch_values(step.finish(staged), meta)
    start = time.perf_counter()
    step.hold(staged, writer.put(meta["row"], values, lend=True))
    stats.phases["put"] += time.perf_counter() - start
    stats.batch_ends.append((time.perf_counter(), len(meta["row"])))
    return len(meta["row"])


def loop_threads(workers: int, device: torch.device, costs: Costs | None) -> int | None:
    """Torch's threads for the loop, or None to leave them: on a CPU with
    decode workers and a decode-bound model, the cores the workers leave (at
    least one). Threads beside busy workers spin at every OpenMP barrier (with
    2 workers on 2 cores `test_vit`'s loop took 2.75 CPU ms per image in the
    main process against 1.70 on one thread, for a 1.5 ms forward pass;
    `bench/bench_host.py`); a forward-bound model (ViT-S) lost half its speed
    to the cap (bench/README.md, options rejected)."""
    if device.type != "cpu" or not workers or not (costs and costs.decode_bound):
        return None
    return max(1, usable_cores() - workers)


@contextmanager
def intra_op_threads(threads: int | None) -> Iterator[None]:
    """torch on `threads` threads inside the block (None: unchanged), then as before."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def overlap_decoding(workers: int, device: torch.device) -> bool:
    """With no worker processes, decode in a background thread while the model
    runs only if the model does not need the cores: on a GPU. On a CPU the
    forward pass uses every core, and a decode thread beside it stalls torch's
    OpenMP threads; decoding each batch on all cores between forward passes
    ran closer to the bare forward (bench/bench_extract.py, "w0 overlapped")."""
    return workers == 0 and device.type != "cpu"


def batch_values(values: dict[str, np.ndarray], meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """The arrays of one batch (`Step.finish`), with status and error filled in per row."""
    finite = values.pop("finite")
    errors = np.array(meta[ERROR], dtype=object)
    bad_values = (errors == "") & ~finite
    errors[bad_values] = "model: NaN or inf in the outputs"
    failed = errors != ""
    warnings = np.array(meta["warning"], dtype=object)
    errors[~failed & (warnings != "")] = warnings[~failed & (warnings != "")]
    if failed.any():
        for value in values.values():
            value[failed] = 0  # a failed row holds fill values only
    values[STATUS] = np.where(failed, STATUS_FAILED, STATUS_OK).astype(np.uint8)
    values[ERROR] = errors
    values[KEY] = np.array(meta[KEY], dtype=object)
    values[LABEL] = meta[LABEL]
    return values
