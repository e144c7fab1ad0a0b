"""`--decode gpu`: decoding and resizing on the run's device (here the CPU,
through the same code), a recorded variant close to the default PIL path."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import tests.tiny_models  # noqa: F401
from tests.conftest import encode, image_samples, make_image, write_shard
from vitreg.cache import ConfigMismatchError, open_store
from vitreg.core.samples import decode_image, pixel_transform
from vitreg.extract.gpudecode import DEVICE_DECODE, decode_batch
from vitreg.extract.run import run_extract

CONFIG = {"input_size": (3, 56, 56), "interpolation": "bicubic", "crop_pct": 0.875,
          "crop_mode": "center", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
CPU = torch.device("cpu")


def reference(data: bytes) -> torch.Tensor:
    """The default path: PIL, then timm's eval transform (an independent implementation)."""
    kwargs = {k: v for k, v in CONFIG.items() if k not in ("mean", "std")}
    return pixel_transform(kwargs)(decode_image({"jpg": data}))


def cmyk_jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.convert("CMYK").save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def test_device_decoding_is_within_a_few_levels_of_pil_and_timm():
    rng = np.random.default_rng(42)
    photos = [make_image(rng, int(rng.integers(60, 200)), int(rng.integers(60, 200)))
              for _ in range(6)]
    datas = [encode(p) for p in photos]
    datas += [encode(photos[0], "PNG"), cmyk_jpeg(photos[1]), encode(photos[2].convert("L"))]
    ours, errors, fallbacks = decode_batch(datas, CONFIG, CPU)
    assert errors == [""] * len(datas) and fallbacks == 1  # the PNG
    assert ours.shape == (len(datas), 3, 56, 56) and ours.dtype == torch.uint8
    for i, data in enumerate(datas):
        diff = (ours[i].int() - reference(data).int()).abs()
        assert diff.float().mean() < 1.0 and diff.max() <= 8, (i, diff.float().mean(), diff.max())


def test_what_decodes_nowhere_fails_its_row_alone():
    rng = np.random.default_rng(1)
    good = encode(make_image(rng, 80, 90))
    images, errors, fallbacks = decode_batch([good, b"\xff\xd8 not a jpeg", None], CONFIG, CPU)
    assert errors[0] == "" and errors[1].startswith("decode: ") and errors[2] == ""
    assert fallbacks == 1
    assert images[0].float().mean() > 0 and not images[1].any() and not images[2].any()


def test_a_run_with_device_decoding_is_recorded_and_close_to_the_default(tmp_path):
    samples = image_samples(6)
    samples[3]["jpg"] = b"\xff\xd8 damaged"
    shard = write_shard(tmp_path / "s.tar", samples)
    args = dict(shards=[shard], model="tiny_dinov2_reg4", weights="random", progress=False,
                workers=0, batch_size=4)
    run_extract(out=str(tmp_path / "pil"), **args)
    summary = run_extract(out=str(tmp_path / "gpu"), decode="gpu", **args)
    assert (summary.ok, summary.failed) == (5, 1)
    pil, gpu = open_store(str(tmp_path / "pil")), open_store(str(tmp_path / "gpu"))
    assert pil.meta["decode"] is None and gpu.meta["decode"] == DEVICE_DECODE
    assert str(gpu.array("error")[3]).startswith("decode: ")
    ok = [0, 1, 2, 4, 5]
    a = pil.array("tokens")[:].astype(np.float32)[ok]
    b = gpu.array("tokens")[:].astype(np.float32)[ok]
    assert np.linalg.norm(b - a) / np.linalg.norm(a) < 0.05
    with pytest.raises(ConfigMismatchError, match="decode"):
        run_extract(out=str(tmp_path / "pil"), decode="gpu", **args)


def test_the_command_takes_decode_gpu(tmp_path):
    from click.testing import CliRunner

    from vitreg.extract.cli import extract_command

    shard = write_shard(tmp_path / "s.tar", image_samples(3))
    result = CliRunner().invoke(extract_command, [
        shard, "--model", "tiny_dinov2_reg4", "--weights", "random", "--out",
        str(tmp_path / "s"), "--decode", "gpu", "--no-progress", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert open_store(str(tmp_path / "s")).meta["decode"] == DEVICE_DECODE
