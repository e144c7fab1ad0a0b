"""A checkpoint file gives the network timm builds from it at the run size,
whatever size its position embedding was saved at.

The reference is plain timm: `timm.create_model(real_name, pretrained=True,
pretrained_cfg_overlay={"file": ...}, img_size=S)`, the path a user takes,
which resamples the saved position embedding once, at load.
"""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

import tests.tiny_models  # noqa: F401  (registers the tiny families)
from tests.conftest import image_samples, write_shard
from tests.test_extract.test_values import TOLERANCE, decoded_images, reference_arrays
from tests.tiny_models import FAMILIES, SMALL, _sharpen
from vitreg.cache import open_store
from vitreg.extract.run import run_extract

#: family -> (run size, third size); the native size is FAMILIES[family][1].
SIZES = {"tiny_dinov2_reg4": (70, 98), "tiny_deit3": (80, 96), "tiny_openclip": (80, 48)}


def save_checkpoint(path, family: str, saved_at: int) -> str:
    """A sharpened random-init backbone of `family` saved at `saved_at` px, no head."""
    torch.manual_seed(7)
    model = _sharpen(
        timm.create_model(
            FAMILIES[family][0], pretrained=False, num_classes=0, img_size=saved_at, **SMALL
        )
    )
    with torch.no_grad():  # a position embedding with structure, so resampling shows
        model.pos_embed.normal_(0, 1)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


def timm_reference(family: str, checkpoint: str, size: int) -> torch.nn.Module:
    return timm.create_model(
        FAMILIES[family][0],
        pretrained=True,
        num_classes=0,
        img_size=size,
        pretrained_cfg_overlay={"file": checkpoint, "num_classes": 0},
        **SMALL,
    )


@pytest.mark.parametrize("family", sorted(SIZES))
@pytest.mark.parametrize("saved", ["run", "native", "third"])
def test_checkpoint_at_any_size_gives_timms_network(tmp_path, family, saved):
    run_size, third = SIZES[family]
    saved_at = {"run": run_size, "native": FAMILIES[family][1], "third": third}[saved]
    checkpoint = save_checkpoint(tmp_path / "w.safetensors", family, saved_at)
    samples = image_samples(4, start=11)
    shard = write_shard(tmp_path / "s.tar", samples)
    out = str(tmp_path / "store.zarr")
    run_extract(
        shards=[shard],
        model=family,
        out=out,
        weights=checkpoint,
        img_size=run_size,
        batch_size=2,
        precision="fp32",
        with_options=["blocks", "qkv", "blocks_qkv"],
        progress=False,
    )
    store = open_store(out)
    assert store.meta["img_size"] == run_size and store.meta["dynamic_img_size"] is False
    ref = reference_arrays(
        timm_reference(family, checkpoint, run_size), decoded_images(samples), run_size
    )
    for name, (rtol, atol) in TOLERANCE.items():
        np.testing.assert_allclose(
            store.array(name)[:].astype(np.float64),
            ref[name],
            rtol=rtol,
            atol=atol,
            err_msg=f"{family} saved {saved} {name}",
        )


def test_api_and_command_line_default_to_pretrained_weights():
    """A caller who omits the weights never gets a random store silently."""
    import inspect

    from vitreg.extract.cli import extract_command
    from vitreg.extract.config import ExtractConfig
    from vitreg.extract.model import build_model

    assert inspect.signature(build_model).parameters["weights"].default == "pretrained"
    assert ExtractConfig(shards=["a.tar"], model="m", out="o").weights == "pretrained"
    option = next(p for p in extract_command.params if p.name == "weights")
    assert option.default == "pretrained"


@timm.models.register_model
def tiny_fixed_size(pretrained: bool = False, **kwargs):
    """A model whose definition fixes its size: timm cannot build it at another."""
    return timm.create_model("tiny_dinov2_reg4", img_size=56, **kwargs)


def test_a_model_that_cannot_be_built_at_the_size_runs_dynamic(tmp_path):
    from vitreg.extract.model import build_model

    assert build_model("tiny_fixed_size", weights="random").dynamic_img_size is False
    loaded = build_model("tiny_fixed_size", weights="random", img_size=70)
    assert loaded.dynamic_img_size and loaded.geometry.grid == (5, 5)
    assert any("dynamic_img_size" in note for note in loaded.notes)
    torch.manual_seed(42)
    reference = timm.create_model("tiny_fixed_size", num_classes=0, dynamic_img_size=True).eval()
    x = torch.randn(2, 3, 70, 70)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.forward_features(x), reference.forward_features(x))


def test_pretrained_weights_are_loaded_into_the_model_built_at_the_size(monkeypatch):
    """timm resamples the hub checkpoint at load: `create_model(pretrained=True, img_size=S)`."""
    import vitreg.extract.model as model_module

    calls = []

    def fake_pretrained(name, **kwargs):
        calls.append(kwargs)
        return timm.create_model(name, **kwargs)

    monkeypatch.setattr(model_module, "_create_pretrained", fake_pretrained)
    loaded = model_module.build_model("tiny_dinov2_reg4", img_size=70)
    assert calls == [{"num_classes": 0, "img_size": 70}]
    assert loaded.weights == "pretrained" and not loaded.dynamic_img_size
