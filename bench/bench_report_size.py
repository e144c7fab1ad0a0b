"""Size of the study's report.html for the paper plan (issue #28): the plan's 18 models,
their `val` and `hires` stores, the report's own analyses plus the study's figures
(norms and similarity on `val`, maps on `hires`, top 3 images), as `study run` writes it.

No pretrained weights here: the stores are synthetic (`vitreg.testing.write_store`) with
each model's real geometry (patch size, depth, registers; 224 px `val`, 800 px `hires`
with pixels, per-block norms and q/k/v norms), norms drawn at random with 2% planted
outliers (--smooth: a smooth field plus the outliers), and the hires `pixels` taken
from ImageNet sample photos (--images) or noise. Random maps compress worse than real
ones: without --smooth the size is an upper bound.

    .venv/bin/python bench/bench_report_size.py --workdir /tmp/report-size \
        --images DIR   # a folder of ImageNet JPEGs
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import click
import numpy as np

from vitreg.analysis import run_maps, run_norms, run_similarity
from vitreg.analysis.report import run_report
from vitreg.cache import Geometry
from vitreg.study.paper import EXTRACTS, PAPER_MODELS
from vitreg.study.report import add_study_sections
from vitreg.testing import write_store

DEPTH = {"small": 12, "base": 12, "medium": 12, "large": 24, "huge": 32, "giant": 40}


def geometry(timm_name: str, img_size: int) -> Geometry:
    """The model's real token geometry at `img_size` (dim kept tiny: nothing reads it)."""
    patch = int(re.search(r"patch(\d+)", timm_name).group(1))
    size = next(s for s in DEPTH if f"_{s}_" in timm_name)
    registers = 4 if "reg4" in timm_name else 0
    grid = (img_size // patch, img_size // patch)
    return Geometry(registers=registers, grid=grid, dim=8, depth=DEPTH[size],
                    img_size=grid[0] * patch)


def photos(folder: str | None, n: int, size: int,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(pixels, keys): the first `n` photos of `folder` (keys: their file stems), or noise."""
    if folder is None:
        return (rng.integers(0, 255, size=(n, size, size, 3), dtype=np.uint8),
                np.array([f"{i:06d}" for i in range(n)], dtype=object))
    from PIL import Image

    files = sorted(Path(folder).iterdir())[:n]
    return (np.stack([np.asarray(Image.open(f).convert("RGB").resize((size, size)))
                      for f in files]), np.array([f.stem for f in files], dtype=object))


def make_store(url: Path, timm_name: str, recipe: str, n: int, images: str | None,
               seed: int, smooth: bool) -> str:
    rng = np.random.default_rng(seed)
    g = geometry(timm_name, EXTRACTS[recipe]["img_size"])
    norms = rng.uniform(20, 60, size=(n, g.tokens)).astype(np.float32)
    if smooth:  # a smooth field over the grid, as real norm maps mostly are
        field = rng.normal(size=(n, *g.grid)).cumsum(axis=1).cumsum(axis=2)
        field = (field - field.min()) / (np.ptp(field) or 1.0)
        norms[:, g.prefix:] = 20 + 40 * field.reshape(n, -1)
    outliers = rng.random((n, g.patches)) < 0.02
    norms[:, g.prefix:][outliers] = rng.uniform(200, 500, size=int(outliers.sum()))
    arrays = {"norms": norms,
              "attention": rng.dirichlet(np.ones(g.tokens), size=n).astype(np.float16),
              "neighbor_cos": rng.uniform(0, 1, size=(n, g.patches)).astype(np.float16)}
    if recipe == "hires":
        arrays["pixels"], arrays["key"] = photos(images, n, g.img_size, rng)
        arrays["blocks/norms"] = (norms[:, None, :] * rng.uniform(
            0.5, 1.0, size=(n, g.depth, 1))).astype(np.float16)
        arrays["qkv_norms"] = (norms[:, None, :] * [[1.0], [2.0], [0.5]]).astype(np.float16)
        arrays["blocks/qkv_norms"] = np.repeat(arrays["qkv_norms"][:, None], g.depth, axis=1)
    return write_store(str(url), arrays, geometry=g, chunk_rows=4, model=timm_name,
                       pretrained_cfg=timm_name, weights="random", img_size=g.img_size)


@click.command()
@click.option("--workdir", required=True, type=click.Path(file_okay=False))
@click.option("--images", default=None, help="Folder of photos for the hires pixels.")
@click.option("--val-images", default=200, show_default=True)
@click.option("--hires-images", default=8, show_default=True,
              help="Rows per hires store (the plan's limit is 64; maps draw the top 3).")
@click.option("--smooth", is_flag=True, help="Smooth norm maps (real maps mostly are) "
              "instead of noise (the worst case for PNG compression).")
@click.option("--reuse", is_flag=True, help="Keep the stores and study analyses of an "
              "earlier run in --workdir; only rebuild the report.")
def main(workdir: str, images: str | None, val_images: int, hires_images: int,
         smooth: bool, reuse: bool) -> None:
    work = Path(workdir)
    start = time.perf_counter()
    analyses = work / "analyses"
    val = [str(work / "stores" / f"{study}-val.zarr") for study in PAPER_MODELS]
    if not (reuse and (analyses / "maps" / "grid.json").exists()):
        hires = []
        for i, (study, (timm_name, *_)) in enumerate(PAPER_MODELS.items()):
            make_store(Path(val[i]), timm_name, "val", val_images, images, i, smooth)
            hires.append(make_store(work / "stores" / f"{study}-hires.zarr", timm_name,
                                    "hires", hires_images, images, 100 + i, smooth))
        run_norms(val, out=analyses / "norms")
        run_similarity(val, out=analyses / "similarity")
        run_maps(hires, out=analyses / "maps", top=3)
    made = time.perf_counter()
    html = run_report(val, out=work / "report", top=3)
    add_study_sections(html, [str(analyses / n) for n in ("norms", "similarity", "maps")])
    done = time.perf_counter()
    grids = len(re.findall(r'<figure class="grid"', html.read_text()))
    print(f"{len(PAPER_MODELS)} models, {grids} models x images grids; stores and study "
          f"analyses in {made - start:.0f} s, report in {done - made:.0f} s")
    print(f"report.html: {html.stat().st_size / 2**20:.2f} MiB ({html})")


if __name__ == "__main__":
    main()
