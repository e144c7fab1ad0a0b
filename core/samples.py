"""Webdataset shards -> samples -> RGB images: the pieces that say which sample
is which row of a store and how its image is decoded.

Stage-free, so that extract (which writes the rows) and probe (which re-decodes
a store's images for its reconstruction targets) group tar members, read
images and build the uint8 transform one way.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import webdataset as wds
from braceexpand import UnbalancedBracesError
from PIL import Image
from webdataset import tariterators

from .errors import UsageError

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "ppm", "pgm", "bmp", "tif", "tiff", "gif")


def expand_shards(shards: list[str]) -> list[str]:
    """Brace patterns (`shard-{000..063}.tar`) expanded, order kept; a pattern
    whose braces do not pair is refused with a sentence."""
    urls: list[str] = []
    for shard in shards:
        try:
            urls.extend(wds.shardlists.expand_urls(shard))
        except UnbalancedBracesError as exc:
            raise UsageError(f"shard pattern {shard!r} has unbalanced braces: every {{ needs "
                             "its }, as in train-{000..063}.tar") from exc
    return urls


@dataclass
class ShardDamage:
    url: str
    reason: str


def shard_samples(url: str, damage: list[ShardDamage] | None = None) -> Iterator[dict[str, Any]]:
    """Raw samples (member bytes by extension, `__key__`) of one shard.

    A shard that cannot be opened or is cut short ends early: the whole
    samples before the cut are kept, the one it cut is dropped, and the
    damage is recorded in `damage`.
    """
    seen: list[ShardDamage] = []

    def record(exc: Exception) -> bool:
        reason = str(exc.args[0]) if exc.args else repr(exc)
        seen.append(ShardDamage(url, f"{type(exc).__name__}: {reason}"))
        return False  # stop reading this shard

    streams = tariterators.url_opener([{"url": url}], handler=record)
    held = None  # a sample is whole only once the next one starts or the tar ends cleanly
    for sample in group_members(tariterators.tar_file_expander(streams, handler=record)):
        if held is not None:
            yield held
        held = sample
    if held is not None and not seen:
        yield held
    if damage is not None:
        damage.extend(seen)


def group_members(files: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Consecutive tar members with one key make a sample (webdataset's rule).

    Unlike webdataset's `group_by_keys`, a member whose extension the current
    sample already has starts a new sample instead of raising: two samples
    with one key both get a row, and the later one is failed as a duplicate.
    """
    current: dict[str, Any] | None = None
    for member in files:
        if not member:  # webdataset's end-of-shard marker
            continue
        prefix, suffix = tariterators.base_plus_ext(member["fname"])
        if prefix is None:
            continue
        suffix = suffix.lower()
        if current is None or prefix != current["__key__"] or suffix in current:
            if current is not None:
                yield current
            current = {"__key__": prefix, "__url__": member["__url__"]}
        current[suffix] = member["data"]
        if "__data__" in member:  # from a header scan: where the member's data lies
            current.setdefault("__members__", []).append((suffix, *member["__data__"]))
    if current is not None:
        yield current


def decode_image(sample: dict[str, Any]) -> Image.Image:
    """The sample's image as RGB; raises with a reason a person can act on."""
    return decode_checked(sample)[0]


def decode_checked(sample: dict[str, Any]) -> tuple[Image.Image, str]:
    """(RGB image, warning or ""): the warning says when pixel values were clipped."""
    found = image_members(sample)
    if not found:
        members = sorted(k for k in sample if not k.startswith("__"))
        raise ValueError(f"no image member (members: {members})")
    with Image.open(io.BytesIO(sample[found[0]])) as img:
        img.load()
        mode = img.mode
        rgb, clipped = to_rgb(img)
    return rgb, f"warning: {mode} image values outside 0..65535 were clipped" if clipped else ""


def image_members(sample: dict[str, Any]) -> list[str]:
    """The sample's image members: `jpg`, `png`, ...; failing those, members
    such as `v1.jpg` that a dotted file name (`img.v1.jpg`, key `img`) made."""
    exact = [e for e in IMAGE_EXTS if e in sample]
    if exact:
        return exact
    return sorted(k for k in sample if not k.startswith("__") and "." in k
                  and k.rsplit(".", 1)[1] in IMAGE_EXTS)


def to_rgb(img: Image.Image) -> tuple[Image.Image, bool]:
    """(8-bit RGB, whether values were clipped). 16-bit and 32-bit integer
    modes are scaled from 0..65535 (or 0..255 when no value exceeds 255) and
    float ones from 0..1 (or 0..255): PIL's own convert clips them to white.
    CMYK, LA, P and the rest go through PIL's convert."""
    if img.mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return img.convert("RGB"), False
    values = np.asarray(img, dtype=np.float64)
    high = values.max(initial=0)
    if img.mode == "F":
        top = 1.0 if high <= 1.0 else 255.0
    else:
        top = 65535.0 if img.mode.startswith("I;16") or high > 255 else 255.0
    scaled = values / top * 255.0 + 0.5
    clipped = bool((scaled < 0).any() or (scaled >= 256).any())
    gray = Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), "L")
    return gray.convert("RGB"), clipped


def pixel_transform(preprocessing: dict[str, Any]) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> uint8 (3, S, S) tensor: timm's eval transform built from the
    `create_transform` keyword arguments a store records (`preprocessing`), with
    no scaling or normalisation (mean and std are ignored).

    `normalize=False` makes timm end with `MaybePILToTensor`, which keeps uint8.
    """
    from timm.data import create_transform

    kwargs = {k: v for k, v in preprocessing.items() if k not in ("mean", "std")}
    if isinstance(kwargs.get("input_size"), list):
        kwargs["input_size"] = tuple(kwargs["input_size"])
    return create_transform(**kwargs, is_training=False, normalize=False)
