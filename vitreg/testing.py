"""Planted stores: vitreg's store format with known answers, written through
`cache`'s writer chunk by chunk (so a benchmark store of several GB never sits
in memory). Use them to check that a probe finds what is there before
trusting it on a model's store (`write_planted_store(url, n_images=...,
geometry=REALISTIC_GEOMETRY, planted=REALISTIC)`).

What is planted, per image of class y:
- normal patch tokens: a code of their grid position and a linear code of
  their pixel patch (each patch is 128 + a few random basis patterns), no class;
- outlier patch tokens (exactly `outlier_fraction` of all patch tokens, the
  highest norms): a code of the class, no position, no pixels;
- [CLS]: a code of the class; registers: noise;
- pooled features: `cls` weakly encodes the class, `registers` (the first
  register) strongly, `patch_mean` not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vitreg.cache import (
    ARRAYS,
    STATUS_FAILED,
    STATUS_OK,
    ArraySpec,
    ChunkWriter,
    Geometry,
    create_store,
    mark_complete,
    names,
)
from vitreg.cache.schema import arrays_for, parse_token_mode


def synthetic_attrs(geometry: Geometry, **extra: Any) -> dict[str, Any]:
    """Root attributes of a store with no model behind it."""
    attrs = {
        "model": "synthetic",
        "weights": "synthetic",
        "weights_sha256": None,
        "img_size": geometry.img_size,
        "patch_size": geometry.img_size // geometry.grid[0],
        "grid": list(geometry.grid),
        "prefix_tokens": geometry.prefix,
        "registers": geometry.registers,
        "embed_dim": geometry.dim,
        "depth": geometry.depth,
        "token_mode": "all",
        "with": [],
        "seed": 42,
    }
    attrs.update(extra)
    return attrs


def write_store(
    url: str,
    arrays: dict[str, np.ndarray],
    *,
    geometry: Geometry,
    chunk_rows: int = 16,
    shard_rows: int | None = None,
    rows_per_put: int = 7,
    complete: bool = True,
    sample_k: int = 0,
    **attrs: Any,
) -> str:
    """Create a store at `url` holding `arrays` (full length, first axis = row).

    `status` defaults to all ok, `key` to "000000"..., `label` to -1 and
    `error` to "". Arrays of the contract that are not given hold zeros
    (their fill value), written like the others. Rows go through
    `ChunkWriter` in pieces of `rows_per_put`, so the writer's buffering is
    exercised too.
    """
    n = len(next(iter(arrays.values())))
    arrays = dict(arrays)
    arrays.setdefault(names.STATUS, np.full(n, STATUS_OK, np.uint8))
    arrays.setdefault(names.KEY, np.array([f"{i:06d}" for i in range(n)], dtype=object))
    arrays.setdefault(names.LABEL, np.full(n, -1, np.int32))
    arrays.setdefault(names.ERROR, np.array([""] * n, dtype=object))
    specs = [ARRAYS[name] for name in ARRAYS if name in arrays or ARRAYS[name].option is None]
    if names.TOKENS not in arrays:
        specs = [s for s in specs if s.name != names.TOKENS]
    root = create_store(
        url, geometry=geometry, n_rows=n, specs=specs, chunk_rows=chunk_rows,
        shard_rows=shard_rows, attrs=synthetic_attrs(geometry, **attrs), sample_k=sample_k,
    )
    for spec in specs:  # every chunk exists, as extract writes them: `verify` expects that
        if spec.name not in arrays:
            arrays[spec.name] = zeros(spec, n, geometry, sample_k)
    writer = ChunkWriter(root, list(arrays))
    for start in range(0, n, rows_per_put):
        rows = np.arange(start, min(start + rows_per_put, n))
        writer.put(rows, {name: value[rows] for name, value in arrays.items()})
    writer.close()
    if complete:
        mark_complete(root)
    return url


@dataclass(frozen=True)
class Planted:
    """Strengths of the planted signals (token units unless said)."""

    classes: int = 4
    outlier_fraction: float = 0.02
    position: float = 6.0  # norm of a normal token's position code
    pixels: float = 4.0  # token scale of the pixel-pattern coefficients
    pixel_amplitude: float = 12.0  # 0-255 intensity of one unit pattern coefficient
    basis: int = 4  # pixel patterns per patch
    outlier: float = 25.0  # norm of an outlier's class code
    cls: float = 8.0
    noise: float = 0.3
    pooled_cls: float = 2.0  # weak
    pooled_registers: float = 6.0  # strong


#: A store as hard as a real one: 14 x 14 positions, D = 64, a position code
#: weaker than the content (pixel) code, outliers with about 10x the norm of
#: normal tokens that hold only a class code. Patches of 4 px keep it small.
REALISTIC_GEOMETRY = Geometry(registers=0, grid=(14, 14), dim=64, depth=2, img_size=56)
REALISTIC = Planted(position=2.0, pixels=4.0, basis=8, noise=0.3, outlier=120.0)


class _Codes:
    """The random codebooks of one planted store, fixed by its seed."""

    def __init__(self, g: Geometry, p: int, planted: Planted, seed: int) -> None:
        rng = np.random.default_rng([seed, 7])
        d = g.dim

        def unit(n: int) -> np.ndarray:
            v = rng.standard_normal((n, d))
            return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

        self.position = unit(g.patches) * planted.position
        self.pixel_dirs = np.linalg.qr(rng.standard_normal((d, planted.basis)))[0].T.astype(
            np.float32)  # (basis, D), orthonormal rows
        self.patterns = rng.uniform(-1, 1, (planted.basis, p * p * 3)).astype(np.float32)
        self.outlier = unit(planted.classes) * planted.outlier
        self.cls = unit(planted.classes) * planted.cls
        self.pooled_cls = unit(planted.classes) * planted.pooled_cls
        self.pooled_registers = unit(planted.classes) * planted.pooled_registers


def plant_outliers(n_images: int, patches: int, fraction: float, seed: int) -> np.ndarray:
    """(N, P) bool: exactly round(fraction * N * P) outlier patch tokens, seeded.

    With fraction 0.02 they are exactly the tokens above the 98th percentile.
    """
    total = n_images * patches
    k = round(fraction * total)
    flat = np.zeros(total, dtype=bool)
    flat[np.random.default_rng([seed, 3]).choice(total, size=k, replace=False)] = True
    return flat.reshape(n_images, patches)


def _chunk(
    rows: np.ndarray, g: Geometry, p: int, codes: _Codes, planted: Planted, labels: np.ndarray,
    outliers: np.ndarray, seed: int,
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, 11, int(rows[0])])
    n, d, P = rows.size, g.dim, g.patches
    y = labels[rows]
    out = outliers[rows]
    coef = rng.standard_normal((n, P, planted.basis)).astype(np.float32)
    patch = np.clip(128.0 + planted.pixel_amplitude * (coef @ codes.patterns), 0, 255)
    gh, gw = g.grid
    pixels = (np.rint(patch).astype(np.uint8).reshape(n, gh, gw, p, p, 3)
              .transpose(0, 1, 3, 2, 4, 5).reshape(n, gh * p, gw * p, 3))
    tokens = planted.noise * rng.standard_normal((n, g.tokens, d), dtype=np.float32)
    tokens[:, 0] += codes.cls[y]
    normal_part = codes.position[None] + planted.pixels * (coef @ codes.pixel_dirs)
    patch_tokens = np.where(out[..., None], codes.outlier[y][:, None], normal_part)
    tokens[:, g.prefix:] += patch_tokens
    norms = np.linalg.norm(tokens, axis=-1).astype(np.float32)

    def noise(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32)

    registers = noise(n, g.registers, d)
    if g.registers:
        registers[:, 0] += codes.pooled_registers[y]
    return {
        names.LABEL: y.astype(np.int32),
        names.TOKENS: tokens,
        names.NORMS: norms,
        names.PIXELS: pixels,
        names.POOLED_CLS: codes.pooled_cls[y] + noise(n, d),
        names.POOLED_PATCH_MEAN: noise(n, d),
        names.POOLED_REGISTERS: registers,
    }


def _sample(values: dict[str, np.ndarray], g: Geometry, k: int, rng: np.random.Generator):
    """Keep K patch tokens per image: the K/2 highest norms, then K/2 drawn
    uniformly from all patches (as extract does since schema 1.2)."""
    norms = values[names.NORMS][:, g.prefix:]
    top = np.argsort(-norms, axis=1, kind="stable")[:, : k // 2]
    draw = np.sort(rng.random(norms.shape).argsort(axis=1)[:, : k - k // 2], axis=1)
    index = np.concatenate([top, draw], axis=1)
    tokens = values.pop(names.TOKENS)
    values[names.SAMPLED_INDEX] = index.astype(np.int16)
    values[names.SAMPLED_TOKENS] = np.take_along_axis(tokens[:, g.prefix:], index[..., None], 1)
    values[names.SAMPLED_PREFIX] = tokens[:, : g.prefix]
    return values


def _row_meta(values: dict[str, np.ndarray], rows: np.ndarray, bad: np.ndarray,
              seed: int) -> None:
    """Zero the failed rows' data and add status, key and error."""
    for name in values:
        if name != names.LABEL:
            values[name][bad] = 0
    values[names.STATUS] = np.where(bad, STATUS_FAILED, STATUS_OK).astype(np.uint8)
    # images of another seed are other images: their keys differ (--val overlap check)
    values[names.KEY] = np.array([f"s{seed}-{r:08d}" for r in rows], dtype=object)
    values[names.ERROR] = np.array(["planted failure" if b else "" for b in bad], dtype=object)


def zeros(spec: ArraySpec, n: int, geometry: Geometry, sample_k: int = 0) -> np.ndarray:
    """`n` rows of zeros of one array: what a store holds where nothing was planted."""
    dtype = object if spec.dtype == "string" else spec.dtype
    return np.zeros((n, *spec.row_shape(geometry, sample_k)), dtype)


@dataclass(frozen=True)
class _Plan:
    """What a planted store holds: its geometry, codebooks, classes and outliers."""

    g: Geometry
    p: int  # patch size in pixels
    planted: Planted
    codes: _Codes
    labels: np.ndarray
    outliers: np.ndarray  # (N, P) bool
    failed: np.ndarray  # (N,) bool
    seed: int
    token_mode: str
    specs: tuple[ArraySpec, ...]

    def values(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Every array's values for `rows` (one chunk)."""
        kind, k = parse_token_mode(self.token_mode)
        values = _chunk(rows, self.g, self.p, self.codes, self.planted, self.labels,
                        self.outliers, self.seed)
        if kind == "sampled":
            rng = np.random.default_rng([self.seed, 13, int(rows[0])])
            values = _sample(values, self.g, k, rng)
        _row_meta(values, rows, self.failed[rows], self.seed)
        # unplanted (attention, neighbour cosines): zeros; every chunk of a complete store exists
        return {spec.name: values[spec.name] if spec.name in values
                else zeros(spec, len(rows), self.g, k) for spec in self.specs}


def write_planted_store(
    url: str,
    *,
    n_images: int,
    geometry: Geometry,
    planted: Planted = Planted(),
    seed: int = 0,
    codes_seed: int | None = None,
    chunk_rows: int = 16,
    token_mode: str = "all",
    with_pixels: bool = True,
    failed: np.ndarray | None = None,
    written_rows: int | None = None,
    labels: np.ndarray | None = None,
    **attrs: Any,
) -> str:
    """Write a planted store at `url`; returns `url`.

    `codes_seed` (default `seed`) fixes the codebooks: two stores with one
    `codes_seed` and different `seed`s are different images of one "model".
    `failed`: rows written with status 2 (and zero data); `written_rows`: stop
    after the chunks below this row, leaving the rest pending and the store
    incomplete (a store still being written). `labels` overrides the classes.
    """
    plan = _plan(n_images, geometry, planted, seed, codes_seed, token_mode, with_pixels,
                 failed, labels)
    meta = synthetic_attrs(geometry, token_mode=token_mode, patch_size=plan.p,
                           sample_k=parse_token_mode(token_mode)[1], planted=planted.__dict__,
                           **attrs)
    meta["with"] = ["pixels"] if with_pixels else []  # the `--with` option
    root = create_store(url, geometry=geometry, n_rows=n_images, specs=plan.specs, attrs=meta,
                        chunk_rows=chunk_rows, sample_k=meta["sample_k"])
    stop = n_images if written_rows is None else written_rows // chunk_rows * chunk_rows
    writer = ChunkWriter(root, [spec.name for spec in plan.specs])
    try:
        for start in range(0, stop, chunk_rows):
            rows = np.arange(start, min(start + chunk_rows, n_images))
            writer.put(rows, plan.values(rows))
    finally:
        writer.close()
    mark_complete(root)  # complete (with threshold) only when no row is pending
    return url


def _plan(n_images: int, g: Geometry, planted: Planted, seed: int, codes_seed: int | None,
          token_mode: str, with_pixels: bool, failed: np.ndarray | None,
          labels: np.ndarray | None) -> _Plan:
    p = g.img_size // g.grid[0]
    if labels is None:
        labels = np.random.default_rng([seed, 5]).integers(0, planted.classes, n_images)
    failed_mask = np.zeros(n_images, bool)
    if failed is not None:
        failed_mask[np.asarray(failed)] = True
    codes = _Codes(g, p, planted, seed if codes_seed is None else codes_seed)
    return _Plan(
        g=g, p=p, planted=planted, codes=codes,
        labels=np.asarray(labels), failed=failed_mask, seed=seed, token_mode=token_mode,
        outliers=plant_outliers(n_images, g.patches, planted.outlier_fraction, seed),
        specs=tuple(arrays_for(["pixels"] if with_pixels else [], token_mode)),
    )
