"""`vitreg extract --dry-run`: rows, arrays, bytes on disk and run time, before
anything is written."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from vitreg.cache import ArraySpec, Geometry, arrays_for
from vitreg.cache.layout import chunk_rows_for_store
from vitreg.cache.schema import parse_token_mode
from vitreg.core.device import resolve_device

from .capture import Capture, resolve_precision
from .config import ExtractConfig
from .data import ShardStream
from .plan import plan_stream
from .step import Step


@dataclass
class ArrayEstimate:
    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int  # on disk: nothing is compressed, and zarr stores edge chunks whole


def _itemsize(dtype: str) -> int:
    return 16 if dtype == "string" else np.dtype(dtype).itemsize  # strings: a rough figure


def estimate_arrays(
    geometry: Geometry, n_rows: int, *, with_options: list[str], token_mode: str,
    tokens_dtype: str = "float16", chunk_rows: int | None = None, query: str | None = "cls",
) -> list[ArrayEstimate]:
    """Shapes and bytes on disk of every array (strings: a rough figure)."""
    _, k = parse_token_mode(token_mode)
    chunk = chunk_rows_for_store(geometry, n_rows, chunk_rows)
    padded = -(-n_rows // chunk) * chunk
    estimates = []
    for spec in arrays_for(with_options, token_mode, tokens_dtype, query=query,
                           chosen=bool(geometry.chosen)):
        row_shape = spec.row_shape(geometry, k)
        nbytes = padded * int(np.prod(row_shape, dtype=np.int64)) * _itemsize(spec.dtype)
        estimates.append(ArrayEstimate(spec.name, (n_rows, *row_shape), spec.dtype, nbytes))
    return estimates


def measure_batches(capture: Capture, stream: ShardStream, specs: list[ArraySpec],
                    batches: int = 2) -> float:
    """images/s of the whole loop (decoding, the device step and the host work
    of `run.batch_values`, not the writes) over the last of `batches` batches;
    the first warms up."""
    from .run import batch_values, host_meta

    dtypes = {s.name: s.dtype for s in specs if s.dtype != "string"}
    step = Step(capture, dtypes)
    rate = 0.0
    batch_iter = iter(stream)
    for _ in range(batches):
        start = time.perf_counter()
        batch = next(batch_iter, None)
        if batch is None:
            break
        meta = host_meta(batch)
        batch_values(step.finish(step.launch(batch["image"], meta["row"])), meta)
        rate = len(meta["row"]) / (time.perf_counter() - start)
    return rate


def run_dry_run(config: ExtractConfig | None = None, /, **options: Any) -> dict[str, Any]:
    """Plan the run of `config` (or of `ExtractConfig(**options)`) and time two
    batches; write nothing."""
    from .run import loop_settings, plan_and_build

    config = config.replace(**options) if config is not None else ExtractConfig(**options)
    dev = resolve_device(config.device)
    plan, loaded = plan_and_build(config)
    query = loaded.adapter.query()
    precision = resolve_precision(config.precision, dev)
    _, batch_size = loop_settings(0, config.batch_size, dev, loaded.geometry)
    with_options = list(config.with_options)
    capture = Capture(loaded, device=dev, precision=precision, with_options=with_options,
                      token_mode=config.token_mode, seed=config.seed)
    todo = np.zeros(plan.n_rows, dtype=bool)
    todo[: 2 * batch_size] = True
    stream = plan_stream(plan, loaded, todo, batch_size)
    specs = arrays_for(with_options, config.token_mode, config.tokens_dtype, query=query,
                       chosen=bool(loaded.geometry.chosen))
    rate = measure_batches(capture, stream, specs)
    estimates = estimate_arrays(loaded.geometry, plan.n_rows, with_options=with_options,
                                token_mode=config.token_mode, tokens_dtype=config.tokens_dtype,
                                chunk_rows=config.chunk_rows, query=query)
    return {
        "n_rows": plan.n_rows, "shards": len(plan.shards), "damaged": plan.damaged(),
        "arrays": estimates, "images_per_second": rate,
        "seconds": plan.n_rows / rate if rate else float("nan"),
        "device": str(dev), "precision": precision, "model": config.model,
    }
