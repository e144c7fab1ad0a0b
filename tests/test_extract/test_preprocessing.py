"""Selectable preprocessing: --crop-pct, --interpolation and named presets."""

from __future__ import annotations

import numpy as np
import pytest
import timm
from click.testing import CliRunner
from torchvision import transforms as T

import tests.tiny_models  # noqa: F401  (registers the tiny families)
from tests.conftest import image_samples, write_shard
from tests.test_extract.test_values import decoded_images
from vitreg.cache import open_store
from vitreg.cli import cli


def extract_cli(tmp_path, *args: str) -> tuple:
    samples = image_samples(3, start=5)
    shard = write_shard(tmp_path / "s.tar", samples)
    out = str(tmp_path / "store.zarr")
    result = CliRunner().invoke(
        cli,
        [
            "extract",
            shard,
            "--model",
            "tiny_dinov2_reg4",
            "--weights",
            "random",
            "--img-size",
            "224",
            "--with",
            "pixels",
            "--tokens",
            "none",
            "--no-progress",
            "--out",
            out,
            *args,
        ],
    )
    assert result.exit_code == 0, result.output
    return open_store(out), decoded_images(samples)


@pytest.mark.parametrize(
    "args",
    [["--crop-pct", "0.875", "--interpolation", "bicubic"], ["--preprocess", "dinov2-linear"]],
)
def test_crop_pct_resizes_256_and_crops_224(tmp_path, args):
    store, images = extract_cli(tmp_path, *args)
    pre = store.meta["preprocessing"]
    assert pre["input_size"] == [3, 224, 224]
    assert pre["crop_pct"] == 0.875 and pre["interpolation"] == "bicubic"
    timm_ops = timm.data.create_transform(
        input_size=224, crop_pct=0.875, interpolation="bicubic", is_training=False
    ).transforms
    assert (timm_ops[0].size, timm_ops[1].size) == (256, (224, 224))
    resize_crop = T.Compose(
        [T.Resize(256, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224)]
    )
    expected = np.stack([np.asarray(resize_crop(img)) for img in images])
    np.testing.assert_array_equal(store.array("pixels")[:], expected)


def test_default_is_the_models_timm_config(tmp_path):
    store, images = extract_cli(tmp_path)
    assert store.meta["preprocessing_preset"] == "timm"
    assert store.meta["preprocessing"]["crop_pct"] == 1.0  # DINOv2 in timm: resize 224 / crop 224
    expected = np.stack(
        [
            np.asarray(T.CenterCrop(224)(T.Resize(224, T.InterpolationMode.BICUBIC)(img)))
            for img in images
        ]
    )
    np.testing.assert_array_equal(store.array("pixels")[:], expected)


def test_unknown_preset_is_refused(tmp_path):
    result = CliRunner().invoke(
        cli, ["extract", "x.tar", "--model", "m", "--out", "o", "--preprocess", "nope"]
    )
    assert result.exit_code == 2 and "dinov2-linear" in result.output


def test_the_api_refuses_an_unknown_preset_or_crop(tmp_path):
    from vitreg.core import UsageError
    from vitreg.extract.transforms import preprocessing_config

    with pytest.raises(UsageError, match="dinov2-linear"):
        preprocessing_config({}, preset="nope")
    with pytest.raises(UsageError, match="crop_pct"):
        preprocessing_config({}, crop_pct=1.5)
    with pytest.raises(UsageError, match="bicubic"):
        preprocessing_config({}, interpolation="cubic")
