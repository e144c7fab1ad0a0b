"""`vitreg shards`: an image folder -> webdataset tars of the original bytes."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import webdataset as wds

from vitreg.core.errors import InputError

from .data import IMAGE_EXTS


@dataclass(frozen=True)
class ImageFile:
    path: Path
    key: str
    label: int
    synset: str | None


def read_synsets(path: Path) -> dict[str, int]:
    """`synset name` per line -> 0-based line number."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"--synsets {path} is not a UTF-8 text file ({exc.reason} at byte "
                         f"{exc.start}): write one `synset name` a line") from exc
    lines = [line.split()[0] for line in text.splitlines() if line.strip()]
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


def unique_keys(images: list[ImageFile]) -> tuple[list[ImageFile], list[str]]:
    """Give files that map to one key (`x.jpg` and `x.png`; `a.b.jpg` and
    `a_b.jpg`) distinct keys `x`, `x_2`, ...; say which were renamed."""
    taken = {image.key for image in images}
    seen: set[str] = set()
    out, renamed = [], []
    for image in images:
        key = image.key
        if key in seen:
            n = 2
            while f"{image.key}_{n}" in taken:
                n += 1
            key = f"{image.key}_{n}"
            taken.add(key)
            renamed.append(f"{image.path.name} -> key {key}")
        seen.add(key)
        out.append(replace(image, key=key))
    return out, renamed


def run_shards(*, src: str, out: str, per_shard: int = 1000, synsets: str | None = None,
               notes: list[str] | None = None) -> list[str]:
    """Write `out/shard-000000.tar`, ...; return the shard paths. What a user
    should know (keys made unique) is appended to `notes`."""
    src_path, out_path = Path(src), Path(out)
    images = list_images(src_path, read_synsets(Path(synsets)) if synsets else None)
    if not images:
        raise InputError(f"no images ({', '.join(IMAGE_EXTS)}) under {src}; "
                         "give a folder of image files (class sub-folders give labels)")
    images, renamed = unique_keys(images)
    unlabelled = sum(image.label < 0 for image in images)
    if unlabelled and notes is not None:
        notes.append(unlabelled_note(unlabelled, len(images), synsets is not None))
    if renamed and notes is not None:
        notes.append(f"{len(renamed)} file(s) shared a key with another and got a new one: "
                     + "; ".join(renamed[:5]) + ("; ..." if len(renamed) > 5 else ""))
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


def unlabelled_note(unlabelled: int, total: int, had_synsets: bool) -> str:
    """Why images got label -1, and what gives them one."""
    fix = ("their synset prefix is not in --synsets" if had_synsets else
           "they are in no class sub-folder and no --synsets file maps their n0... prefix")
    return (f"{unlabelled} of {total} image(s) have label -1 (unknown): {fix}; "
            "the classify and linear probes need labels")
