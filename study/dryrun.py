"""`vitreg study run --dry-run`: every step with its state, what it writes and
how large (extract's own estimate, from weightless builds), and rough hours."""

from __future__ import annotations

import functools
from typing import Any

import click

from vitreg.core.progress import human_seconds

from .execute import State
from .plan import Plan
from .stages import extract_config
from .steps import Step

#: ImageNet-1k sizes, used while a split's shards are placeholders.
IMAGENET_ROWS = {"train": 1_281_167, "val": 50_000}
#: Effective GPU throughput assumed for the hours estimate (bf16, one A100-class GPU).
GPU_FLOPS = 5.0e13
#: Images per second one decode worker feeds (JPEG decode + resize + crop, ImageNet sizes).
DECODE_PER_WORKER = 150.0
#: Classes of ImageNet-1k: the classify and linear heads' outputs unless a probe sets them.
NUM_CLASSES = 1000


def count_rows(step: Step, cache: dict[str, int]) -> int:
    split = step.config["split"]
    if split not in cache:
        shards = step.config["shards"]
        if not shards or shards[0].startswith("FILL-ME"):
            cache[split] = IMAGENET_ROWS[split]
        else:
            from vitreg.extract.plan import plan_shards

            cache[split] = plan_shards(shards).n_rows
    limit = step.config.get("limit")
    return min(cache[split], int(limit)) if limit else cache[split]


@functools.cache
def _geometry(model: str, img_size: int | None) -> Any:
    from vitreg.extract.model import model_geometry

    return model_geometry(model, img_size)


def extract_estimate(step: Step, rows: int) -> tuple[int, float]:
    """Bytes on disk and GPU hours of one extraction."""
    from vitreg.extract.dryrun import estimate_arrays

    config = extract_config(step.config, out=step.output)
    geometry = _geometry(config.model, config.img_size)
    arrays = estimate_arrays(geometry, rows, with_options=list(config.with_options),
                             token_mode=config.token_mode, tokens_dtype=config.tokens_dtype,
                             chunk_rows=config.chunk_rows)
    tokens = geometry.prefix + geometry.grid[0] * geometry.grid[1]
    flops = 2 * 12 * geometry.dim**2 * geometry.depth * tokens * rows  # 2 x params x tokens
    workers = config.workers if isinstance(config.workers, int) else 1
    decode = rows / (DECODE_PER_WORKER * max(workers, 1))
    return sum(a.nbytes for a in arrays), max(flops / GPU_FLOPS, decode) / 3600


def probe_hours(step: Step, steps: list[Step], rows_of: dict[str, int]) -> float | None:
    """CPU hours of one probe from its fits on the train store's geometry
    (`vitreg.probe.costs`): every epoch assumed to run, so an upper bound; None for
    a probe with no cost model."""
    from vitreg.probe.costs import estimate_probe_seconds

    extract = next(s for s in steps if s.id == step.config["train"])
    g = _geometry(extract.config["model"], extract.config.get("img_size"))
    rows = rows_of.get(step.config["train"], 0)
    val = step.config.get("val")
    options = dict(step.config.get("options") or {})
    train_images, val_images = (rows, rows_of.get(val, 0)) if val else \
        (round(rows * (1 - float(options.get("val_fraction", 0.2)))),
         round(rows * float(options.get("val_fraction", 0.2))))
    seconds = estimate_probe_seconds(
        step.config["kind"], dim=g.dim, patches=g.patches, patch_size=g.img_size // g.grid[0],
        registers=g.registers, train_images=train_images, val_images=val_images,
        num_classes=int(options.pop("num_classes", None) or NUM_CLASSES),
        options={k: v for k, v in options.items() if k not in ("val_fraction",)})
    return None if seconds is None else seconds / 3600


def human(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if nbytes < 1024 or unit == "TiB":
            return f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return ""


def describe(plan: Plan, steps: list[Step], states: dict[str, State]) -> dict[str, Any]:
    """Print one line per step; return the totals."""
    rows_cache: dict[str, int] = {}
    rows_of: dict[str, int] = {}
    total_bytes, gpu_h, cpu_h = 0, 0.0, 0.0
    for step in steps:
        state = states[step.id]
        size = ""
        if step.stage == "extract":
            rows_of[step.id] = count_rows(step, rows_cache)
            nbytes, hours = extract_estimate(step, rows_of[step.id])
            total_bytes, gpu_h = total_bytes + nbytes, gpu_h + hours
            size = f"{rows_of[step.id]} images, {human(nbytes)}, {human_seconds(hours * 3600)} GPU"
        elif step.stage == "probe":
            hours = probe_hours(step, steps, rows_of)
            cpu_h += hours or 0.0
            size = ("CPU time unknown (no cost model for this probe)" if hours is None else
                    f"{human_seconds(hours * 3600)} CPU (up to; measured here)")
        reason = f" ({state.reason})" if state.reason else ""
        click.echo(f"{state.status:5s} {step.id:40s} -> {step.output}  {size}{reason}")
    from .setups import table_setup_lines

    for line in table_setup_lines(plan):
        click.echo(line)
    click.echo(f"total: {len(steps)} steps, "
               f"{sum(s.status != 'done' for s in states.values())} to run; stores "
               f"{human(total_bytes)}; about {human_seconds(gpu_h * 3600)} of GPU time (assumed "
               f"rates) and up to {human_seconds(cpu_h * 3600)} of CPU time (probes, priced "
               "with a training step measured on this machine)")
    redo = [k for k, v in states.items() if v.status == "redo" and k.startswith("extract:")]
    if redo:
        click.echo(f"--redo deletes and re-extracts {len(redo)} finished store(s): "
                   f"{', '.join(redo)}")
    stops = [k for k, v in states.items() if v.status == "stop"]
    if stops:
        click.echo(f"a run would stop: {len(stops)} finished store(s) changed or cannot be "
                   f"opened; name each with --redo to extract it afresh: {', '.join(stops)}")
    return {"steps": [s.id for s in steps], "states": {k: v.status for k, v in states.items()},
            "bytes": total_bytes, "gpu_hours": gpu_h, "cpu_hours": cpu_h}
