"""Shared fixtures: tiny shards of made-up images and tiny timm models."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image


def make_image(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    """A smooth colour gradient with blobs and noise: JPEG-friendly, not constant."""
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    base = np.stack([yy, xx, 1 - yy * xx], axis=-1) * 200
    for _ in range(3):
        cy, cx, r = rng.uniform(0, 1, 3)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (0.02 + 0.05 * r))
        base += blob[..., None] * rng.uniform(-80, 80, 3)
    base += rng.normal(0, 6, base.shape)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def encode(img: Image.Image, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, quality=90) if fmt == "JPEG" else img.save(buf, format=fmt)
    return buf.getvalue()


def write_shard(path: Path, samples: list[dict]) -> str:
    with wds.TarWriter(str(path)) as sink:
        for sample in samples:
            sink.write(sample)
    return str(path)


def image_samples(n: int, *, seed: int = 42, start: int = 0, classes: int = 3) -> list[dict]:
    rng = np.random.default_rng(seed + start)
    samples = []
    for i in range(start, start + n):
        img = make_image(rng, int(rng.integers(40, 120)), int(rng.integers(40, 120)))
        samples.append({
            "__key__": f"sample{i:05d}",
            "jpg": encode(img),
            "cls": str(i % classes).encode(),
            "json": json.dumps({"i": i}).encode(),
        })
    return samples


@pytest.fixture
def shards(tmp_path: Path) -> list[str]:
    """Two shards of 7 and 6 made-up JPEGs (13 samples, labels 0..2)."""
    return [
        write_shard(tmp_path / "shard-000.tar", image_samples(7, start=0)),
        write_shard(tmp_path / "shard-001.tar", image_samples(6, start=7)),
    ]


def bare_store(folder: Path, n: int = 6) -> tuple[Path, Path]:
    """(store, shard): `n` made-up images in one shard, extracted by tiny_dinov2
    (random weights, no pixels) into `folder`/s.zarr."""
    import tests.tiny_models  # noqa: F401
    from vitreg.extract.run import run_extract

    shard = Path(write_shard(folder / "part-000.tar", image_samples(n)))
    run_extract(shards=[str(shard)], model="tiny_dinov2", out=str(folder / "s.zarr"),
                weights="random", batch_size=8, progress=False)
    return folder / "s.zarr", shard
