"""Synthetic stores with planted answers for the analysis tests."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import zarr.storage

from vitreg.cache import Geometry
from vitreg.testing import write_store

N_IMAGES = 24
GRID = (8, 8)
REGISTERS = 4
DEPTH = 4


@dataclass
class Planted:
    """A store and the answers planted in it."""

    url: str
    geometry: Geometry
    arrays: dict[str, np.ndarray]
    outliers: list[tuple[int, int]]  # (row, patch index)
    peak_row: int  # the image with the highest norm
    peak_patch: int  # ... and where it is
    attention_peak: dict[int, int] = field(default_factory=dict)


def planted_count(n_patch_tokens: int) -> int:
    """Outliers to plant so that the 98th percentile falls strictly between them and the rest."""
    return math.ceil(0.02 * (n_patch_tokens - 1))


def make_store(
    path: Path, *, n: int = N_IMAGES, grid: tuple[int, int] = GRID, registers: int = REGISTERS,
    extras: bool = True, seed: int = 42, **attrs: object,
) -> Planted:
    rng = np.random.default_rng(seed)
    patch = 14
    g = Geometry(registers=registers, grid=grid, dim=8, depth=DEPTH, img_size=grid[0] * patch)
    p, t = g.patches, g.tokens
    norms = rng.uniform(1.0, 2.0, size=(n, t)).astype(np.float32)
    norms[:, 0] = 3.0  # [CLS] and registers are large but never outliers
    norms[:, 1:g.prefix] = 4.0
    k = planted_count(n * p)
    flat = rng.choice(n * p, size=k, replace=False)
    outliers = sorted((int(i // p), int(i % p)) for i in flat)
    for row, idx in outliers:
        norms[row, g.prefix + idx] = 10.0 + rng.uniform(0, 1)
    peak_row, peak_patch = outliers[len(outliers) // 2]
    norms[peak_row, g.prefix + peak_patch] = 30.0
    arrays: dict[str, np.ndarray] = {"norms": norms}
    cos = rng.uniform(0.0, 0.8, size=(n, p)).astype(np.float16)
    arrays["neighbor_cos"] = cos
    attention = rng.uniform(0, 0.01, size=(n, t)).astype(np.float16)
    peaks = {r: int(rng.integers(p)) for r in range(n)}
    for r, idx in peaks.items():
        attention[r, g.prefix + idx] = 0.5
    arrays["attention"] = attention
    if extras:
        arrays["pixels"] = rng.integers(0, 255, size=(n, g.img_size, g.img_size, 3), dtype=np.uint8)
        blocks = np.repeat(norms[:, None, :], DEPTH, axis=1)
        blocks[:, :2] = rng.uniform(1.0, 2.0, size=(n, 2, t))  # outliers appear at block 3
        arrays["blocks/norms"] = blocks.astype(np.float16)
        arrays["qkv_norms"] = np.stack([norms, norms * 2, norms * 3], axis=1).astype(np.float16)
        per_block = rng.uniform(1.0, 2.0, size=(n, DEPTH, 3, t))
        per_block[:, 1, 1] = norms  # the outliers show in block 2's keys only (as A.2's K maps)
        arrays["blocks/qkv_norms"] = per_block.astype(np.float16)
    url = str(path)
    write_store(url, arrays, geometry=g, chunk_rows=8, **attrs)
    return Planted(url, g, arrays, outliers, peak_row, peak_patch, peaks)


@pytest.fixture
def planted(tmp_path: Path) -> Planted:
    return make_store(tmp_path / "store.zarr")


@dataclass
class ReadLog:
    """Bytes read through zarr's LocalStore, per top-level array path."""

    reads: Counter = field(default_factory=Counter)

    def chunk_bytes(self, array: str) -> int:
        return sum(v for k, v in self.reads.items() if k.startswith(f"{array}/c/"))

    def arrays_read(self) -> set[str]:
        """Arrays of which at least one chunk was read."""
        return {k.rsplit("/c/", 1)[0] for k in self.reads if "/c/" in k}


@pytest.fixture
def read_log(monkeypatch: pytest.MonkeyPatch) -> ReadLog:
    """Count every byte zarr reads from local files, by key."""
    log = ReadLog()
    original = zarr.storage.LocalStore.get

    async def get(self, key, prototype=None, byte_range=None):
        buf = await original(self, key, prototype, byte_range)
        if buf is not None:
            log.reads[key] += len(buf)
        return buf

    monkeypatch.setattr(zarr.storage.LocalStore, "get", get)
    return log


def stored_bytes(url: str, array: str) -> int:
    """Bytes of the chunk files of one array on disk."""
    root = Path(url) / array / "c"
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
