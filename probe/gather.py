"""Turn the blocks of one chunk into features and targets for the selected items.

A gatherer names the arrays it reads and maps `(blocks, local rows, item
fields)` to `(X, Y)`. Blocks hold the chunk's rows from the first to the last
selected one; `local` indexes into them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vitreg.cache import Store

# POOLED: the pooled features a `linear` probe may join with '+', in the column order of X
from vitreg.cache.names import LABEL, PIXELS, POOLED, POOLED_CLS, SAMPLED_PREFIX, TOKENS

from .registry import ProbeError


@dataclass(frozen=True)
class TokenGather:
    """X: the selected tokens; Y: an item field (a position, a label)."""

    source: str  # "tokens" or "sampled/tokens"
    target: str = "patch"

    @property
    def arrays(self) -> tuple[str, ...]:
        return (self.source,)

    def __call__(self, blocks, local, fields):
        return blocks[self.source][local, fields["slot"]], fields[self.target].astype(np.int64)


@dataclass(frozen=True)
class PixelPatchGather:
    """X: the selected tokens; Y: their P x P x 3 patch of the model input (uint8)."""

    source: str
    patch_size: int
    grid: tuple[int, int]

    @property
    def arrays(self) -> tuple[str, ...]:
        return (self.source, PIXELS)

    def __call__(self, blocks, local, fields):
        x = blocks[self.source][local, fields["slot"]]
        return x, pixel_patches(blocks[PIXELS], local, fields["patch"], self.patch_size,
                                self.grid)


@dataclass(frozen=True, eq=False)
class TargetGather:
    """X: the selected tokens; Y: their row of `targets` (item field `target`), pixel
    patches re-decoded from the store's shards (`redecode.py`)."""

    source: str
    targets: np.ndarray  # (items, p*p*3) uint8

    @property
    def arrays(self) -> tuple[str, ...]:
        return (self.source,)

    def __call__(self, blocks, local, fields):
        return blocks[self.source][local, fields["slot"]], self.targets[fields["target"]]


def pixel_patches(
    pixels: np.ndarray, local: np.ndarray, patch: np.ndarray, p: int, grid: tuple[int, int]
) -> np.ndarray:
    """(n, p*p*3) uint8: patch `patch[i]` (row-major on the grid) of image `local[i]`."""
    gh, gw = grid
    n_img = pixels.shape[0]
    tiles = pixels.reshape(n_img, gh, p, gw, p, 3)
    r, c = np.divmod(patch, gw)
    # Advanced indices split by slices: numpy moves the indexed axes first.
    return tiles[local, r, :, c, :, :].reshape(local.size, p * p * 3)


@dataclass(frozen=True)
class ClassifyGather:
    """X: [CLS] | the random normal token | the random outlier token, concatenated."""

    source: str
    #: "tokens" or "sampled/prefix" (slot 0: [CLS] before the final norm), or
    #: "pooled/cls" (after it: sampled stores of schema < 1.4)
    cls_source: str

    @property
    def arrays(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.source, self.cls_source)))

    def __call__(self, blocks, local, fields):
        tokens = blocks[self.source]
        if self.cls_source in (TOKENS, SAMPLED_PREFIX):
            cls = blocks[self.cls_source][local, 0]
        else:
            cls = blocks[POOLED_CLS][local]
        parts = [cls, tokens[local, fields["normal_slot"]], tokens[local, fields["outlier_slot"]]]
        dtype = np.result_type(*parts)
        return np.concatenate([q.astype(dtype, copy=False) for q in parts], axis=1), \
            fields[LABEL].astype(np.int64)


@dataclass(frozen=True)
class PooledGather:
    """X: the chosen post-LayerNorm pooled features, concatenated (registers flattened)."""

    names: tuple[str, ...]  # keys of POOLED, in column order

    @property
    def arrays(self) -> tuple[str, ...]:
        return tuple(POOLED[n] for n in self.names)

    def __call__(self, blocks, local, fields):
        parts = [blocks[POOLED[n]][local].reshape(local.size, -1) for n in self.names]
        return np.concatenate(parts, axis=1).astype(np.float32, copy=False), \
            fields[LABEL].astype(np.int64)


def pooled_columns(names: tuple[str, ...], dim: int, registers: int) -> dict[str, np.ndarray]:
    """Column indices of each pooled feature inside PooledGather(names)'s X."""
    widths = {"cls": dim, "patch_mean": dim, "registers": registers * dim}
    columns, start = {}, 0
    for name in names:
        columns[name] = np.arange(start, start + widths[name])
        start += widths[name]
    return columns


def patch_geometry(store: Store) -> tuple[int, tuple[int, int]]:
    """Patch size in pixels and grid, checked against the stored image size."""
    meta, geometry = store.meta, store.geometry
    grid = tuple(int(g) for g in geometry.grid)
    p = int(meta.get("patch_size") or geometry.img_size // grid[0])
    if (grid[0] * p, grid[1] * p) != (geometry.img_size, geometry.img_size):
        raise ProbeError(
            f"store {store.url}: grid {grid} x patch {p} px does not tile the {geometry.img_size} "
            "px input (padded input?); pixel targets cannot be cut from `pixels`"
        )
    return p, grid


def require_pixels(store: Store) -> None:
    """`--targets pixels` needs the `pixels` array."""
    if PIXELS in store:
        return
    shards = store.meta.get("shards") or store.meta.get("inputs")
    where = f" (its recorded shards: {_short(shards)})" if shards else ""
    raise ProbeError(
        f"store {store.url} has no `pixels` array{where}. Use --targets shards (or auto) to "
        "re-decode the model input from the store's recorded shards with its recorded "
        "preprocessing (--shards PATTERN when they have moved), or re-run "
        "`vitreg extract ... --with pixels` to store them"
    )


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) < 120 else text[:117] + "..."
