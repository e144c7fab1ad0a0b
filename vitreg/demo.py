"""`vitreg demo`: the whole pipeline on photos that installed packages ship.

Shards from the sample photos of scikit-image, scikit-learn and matplotlib ->
extract with `vit_small_patch14_reg4_dinov2` (pretrained when the weights can
be had, else random, said loudly) -> every probe -> analyses -> HTML report.
"""

from __future__ import annotations

import io
from pathlib import Path

import click
from PIL import Image
from rich.console import Console

from vitreg.boundary import cli_errors
from vitreg.core.progress import timed

console = Console(stderr=True)

DEMO_MODEL = "vit_small_patch14_reg4_dinov2.lvd142m"

#: Photos shipped inside packages, by the class folder they go in.
_PHOTOS = {
    "animal": [("skimage", "chelsea.png")],
    "people": [("skimage", "astronaut.png"), ("skimage", "camera.png"),
               ("matplotlib", "grace_hopper.jpg")],
    "vehicle": [("skimage", "rocket.jpg"), ("skimage", "motorcycle_left.png"),
                ("skimage", "motorcycle_right.png")],
    "object": [("skimage", "coffee.png"), ("skimage", "coins.png"),
               ("skimage", "clock_motion.png")],
    "texture": [("skimage", "brick.png"), ("skimage", "grass.png"), ("skimage", "gravel.png")],
    "scene": [("sklearn", "china.jpg"), ("sklearn", "flower.jpg"),
              ("skimage", "hubble_deep_field.jpg"), ("skimage", "moon.png")],
    "microscopy": [("skimage", "cell.png"), ("skimage", "ihc.png"), ("skimage", "retina.jpg")],
    "document": [("skimage", "page.png"), ("skimage", "text.png")],
}


def _package_dir(package: str) -> Path:
    if package == "skimage":
        import skimage.data

        return Path(skimage.data.__file__).parent
    if package == "sklearn":
        import sklearn.datasets

        return Path(sklearn.datasets.__file__).parent / "images"
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data"


def gather_photos(folder: Path) -> int:
    """Copy the photos into class folders, with two half crops of each.

    The originals keep their bytes; the crops (left and right halves, PNG)
    give the probes a few more images to split into train and validation.
    """
    count = 0
    for label, items in _PHOTOS.items():
        target = folder / label
        target.mkdir(parents=True, exist_ok=True)
        for package, name in items:
            source = _package_dir(package) / name
            if not source.is_file():
                continue
            data = source.read_bytes()
            stem = Path(name).stem
            (target / f"{stem}{source.suffix}").write_bytes(data)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                for side, box in (("left", (0, 0, width // 2, height)),
                                  ("right", (width // 2, 0, width, height))):
                    img.crop(box).save(target / f"{stem}_{side}.png")
            count += 3
    return count


def run_demo(*, out: str, batch_size: int = 16) -> Path:
    """Run every stage into `out`; return the report's path."""
    from vitreg.analysis.cli import run_report
    from vitreg.extract.model import WeightsError
    from vitreg.extract.run import run_extract
    from vitreg.extract.shards import run_shards
    from vitreg.probe import PROBES
    from vitreg.probe.cli import run_probe

    root = Path(out)
    n = gather_photos(root / "photos")
    shards = run_shards(src=str(root / "photos"), out=str(root / "shards"), per_shard=32)
    console.print(f"demo: {n} images from installed packages in {len(shards)} shard(s)")
    store = str(root / "store.zarr")
    kwargs = dict(shards=shards, model=DEMO_MODEL, out=store, img_size=224,
                  batch_size=batch_size, with_options=["pixels", "blocks", "qkv"], overwrite=True)
    try:
        summary = run_extract(weights="pretrained", **kwargs)
    except WeightsError as exc:
        reason = str(exc).split(". ")[0].split("\n")[0]
        console.print(f"[bold red]demo: pretrained weights unavailable ({reason}); going on "
                      "with RANDOM weights, so its numbers mean nothing[/]")
        summary = run_extract(weights="random", **kwargs)
    console.print(f"demo: extracted {summary.ok} ok, {summary.failed} failed")
    probes = []
    for kind in PROBES:  # every registered probe
        result = root / f"probe-{kind}.json"
        with timed(f"demo: probe {kind}", start=False):
            run_probe(kind, store, out=str(result), progress=True)
        probes.append(str(result))
    with timed("demo: analyses and report"):
        report = run_report([store], out=str(root / "report"), probes=probes)
    console.print(f"demo: report at {report}")
    return Path(report)


@click.command("demo")
@cli_errors
@click.option("--out", default="vitreg-demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the photos, shards, store, results and report.")
def demo_command(out: str) -> None:
    """The whole pipeline on sample photos, ending with the HTML report."""
    run_demo(out=out)
