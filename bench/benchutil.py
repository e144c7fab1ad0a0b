"""Helpers the bench scripts share: the images they run on (packaged sample
photos by default, a folder by `--images`), shards of them, child processes
that report one JSON line, and dropping a store's pages from the page cache."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

RESULT = "RESULT "
JPEG_SUFFIXES = (".jpg", ".jpeg")
#: As many JPEGs as the ImageNet sample folder the figures in README.md used.
SAMPLE_IMAGES = 100


class Jpeg(NamedTuple):
    key: str
    data: bytes
    label: int
    path: Path


def add_images_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--images", type=Path, default=None,
        help="a folder of JPEG files (class sub-folders, or ImageNet file names labelled by a "
             "synsets.txt in the folder or its parent); default: 100 JPEGs made from the "
             "photos that scikit-image and the other installed packages ship (as `vitreg demo`)")


def sample_jpegs(out: Path, n: int = SAMPLE_IMAGES, seed: int = 0) -> Path:
    """`n` JPEGs in class folders under `out`, made from the photos `vitreg demo`
    gathers from installed packages: each photo, then random crops of them,
    scaled to ImageNet's usual 500 px long side and saved at quality 90."""
    from PIL import Image

    from vitreg.demo import gather_photos

    photos = out / "photos"
    gather_photos(photos)
    sources = sorted(p for p in photos.rglob("*") if p.is_file())
    rng = random.Random(seed)
    for i in range(n):
        src = sources[i % len(sources)]
        with Image.open(src) as img:
            img = img.convert("RGB")
        w, h = img.size
        if i >= len(sources):  # later rounds: a random crop of 60-100% of each side
            cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            img = img.crop((x, y, x + cw, y + ch))
        scale = 500 / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.Resampling.BICUBIC)
        target = out / "jpegs" / src.parent.name / f"{src.stem}_{i:04d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        img.save(target, format="JPEG", quality=90)
    return out / "jpegs"


def image_folder(images: Path | None, tmp: Path) -> Path:
    """The folder of `--images`, or packaged sample JPEGs made under `tmp`."""
    if images is None:
        return sample_jpegs(tmp / "sample-images")
    if not images.is_dir():
        raise SystemExit(f"--images {images}: not a folder")
    return images


def load_jpegs(folder: Path) -> list[Jpeg]:
    """The JPEG files under `folder` with keys and labels as `vitreg shards` gives them."""
    from vitreg.extract.shards import list_images, read_synsets

    synsets = next((p for p in (folder / "synsets.txt", folder.parent / "synsets.txt")
                    if p.is_file()), None)
    files = list_images(folder, read_synsets(synsets) if synsets else None)
    jpegs = [Jpeg(f.key, f.path.read_bytes(), f.label, f.path) for f in files
             if f.path.suffix.lower() in JPEG_SUFFIXES]
    if not jpegs:
        raise SystemExit(f"no JPEG files under {folder}")
    return jpegs


def write_shards(jpegs: list[Jpeg], n: int, out: Path, per_shard: int) -> list[str]:
    """`n` samples in webdataset shards: the JPEGs, repeated under new keys past the first round."""
    import webdataset as wds

    out.mkdir(parents=True, exist_ok=True)
    with wds.ShardWriter(str(out / "shard-%06d.tar"), maxcount=per_shard, verbose=0) as sink:
        for i in range(n):
            jpeg = jpegs[i % len(jpegs)]
            key = jpeg.key if i < len(jpegs) else f"{jpeg.key}_r{i // len(jpegs):04d}"
            sink.write({"__key__": key, "jpg": jpeg.data, "cls": str(jpeg.label).encode(),
                        "json": json.dumps({"label": jpeg.label}).encode()})
    return sorted(str(p) for p in out.glob("shard-*.tar"))


def report(result: dict) -> None:
    """A child's answer to `child_result`: one line on stdout."""
    print(RESULT + json.dumps(result), flush=True)


def child_result(cmd: list[str], env: dict[str, str] | None = None) -> dict:
    """Run a child process and return the dict it reported; fail with its output."""
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith(RESULT)), None)
    if line is None:
        raise RuntimeError(f"child failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return json.loads(line[len(RESULT):])


def drop_cache(path: Path) -> None:
    """Ask the kernel to forget a file's (or a folder's files') clean pages."""
    for file in [path] if path.is_file() else path.rglob("*"):
        if file.is_file():
            with open(file, "rb") as f:
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


@contextlib.contextmanager
def loop_cpu() -> Iterator[dict[str, float]]:
    """Main-process CPU seconds (all its threads, not decode workers) of
    `run_extract`'s loop (`extract.run._extract_rows`), under `"loop"`."""
    import vitreg.extract.run as run_mod

    cpu: dict[str, float] = {}
    real = run_mod._extract_rows

    def timed(*args, **kwargs):
        start = time.process_time()
        result = real(*args, **kwargs)
        cpu["loop"] = time.process_time() - start
        return result

    run_mod._extract_rows = timed
    try:
        yield cpu
    finally:
        run_mod._extract_rows = real
