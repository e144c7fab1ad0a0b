"""`vitreg shards`: an image folder -> webdataset tars of the original bytes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import webdataset as wds

from .data import IMAGE_EXTS


@dataclass(frozen=True)
class ImageFile:
    path: Path
    key: str
    label: int
    synset: str | None


def read_synsets(path: Path) -> dict[str, int]:
    """`synset name` per line -> 0-based line number."""
    lines = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    return {synset: i for i, synset in enumerate(lines)}


def list_images(src: Path, synsets: dict[str, int] | None) -> list[ImageFile]:
    """Images under `src`, sorted; labels from class folders or synset prefixes."""
    files = sorted(p for p in src.rglob("*") if p.suffix.lower().lstrip(".") in IMAGE_EXTS)
    folders = sorted({p.parent for p in files if p.parent != src})
    folder_label = {folder: i for i, folder in enumerate(folders)}
    images = []
    for path in files:
        synset = path.name.split("_")[0] if path.name.startswith("n") else None
        if synsets is not None and synset in synsets:
            label = synsets[synset]
        elif path.parent in folder_label:
            label, synset = folder_label[path.parent], path.parent.name
        else:
            label, synset = -1, None
        key = str(path.relative_to(src).with_suffix("")).replace("/", "_").replace(".", "_")
        images.append(ImageFile(path, key, label, synset))
    return images


def run_shards(*, src: str, out: str, per_shard: int = 1000, synsets: str | None = None) -> list[str]:
    """Write `out/shard-000000.tar`, ...; return the shard paths."""
    src_path, out_path = Path(src), Path(out)
    images = list_images(src_path, read_synsets(Path(synsets)) if synsets else None)
    if not images:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTS)}) under {src}")
    out_path.mkdir(parents=True, exist_ok=True)
    pattern = str(out_path / "shard-%06d.tar")
    with wds.ShardWriter(pattern, maxcount=per_shard, verbose=0) as sink:
        for image in images:
            ext = image.path.suffix.lower().lstrip(".")
            sink.write({
                "__key__": image.key,
                ext: image.path.read_bytes(),  # original bytes, never re-encoded
                "cls": str(image.label).encode(),
                "json": json.dumps({"file": image.path.name, "label": image.label,
                                    "synset": image.synset}).encode(),
            })
    return sorted(str(p) for p in out_path.glob("shard-*.tar"))
