"""Stores of the families whose layout differs from [CLS] + registers, written by
`vitreg extract` and read back: no [CLS] (a pooling head, or none), a
distillation token, and the tokens of chosen blocks (`--blocks`)."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from click.testing import CliRunner

from tests.conftest import image_samples, write_shard
from tests.test_extract.test_adapters import SMALL, close, reference, sharpen
from tests.test_extract.test_values import decoded_images
from tests.tiny_models import register_all
from vitreg.cache import open_store
from vitreg.extract.run import run_extract

#: registered name -> (timm model it shrinks, image size)
TINY = {
    "adapted_siglip": ("vit_base_patch16_siglip_224", 64),
    "adapted_relpos_gap": ("vit_relpos_small_patch16_224", 64),
    "adapted_deit_distilled": ("deit_tiny_distilled_patch16_224", 64),
    "adapted_dinov3": ("vit_small_patch16_dinov3", 64),
}


def _factory(real: str, size: int):
    def build(pretrained: bool = False, **kwargs):
        depth = 3 if "dinov3" in real else 2  # a block neither chosen nor the last
        return sharpen(timm.create_model(real, pretrained=False, **{
            **SMALL, "depth": depth, "img_size": size, **kwargs}))
    return build


register_all(TINY, _factory)


def extract(tmp_path, name: str, **options):
    samples = image_samples(4, start=1)
    shard = write_shard(tmp_path / "s.tar", samples)
    out = str(tmp_path / f"{name}.zarr")
    run_extract(shards=[shard], model=name, out=out, weights="random", batch_size=2,
                progress=False, **options)
    torch.manual_seed(42)
    model = timm.create_model(name, num_classes=0).eval()
    config = timm.data.resolve_data_config(model=model)
    config["input_size"] = (3, TINY[name][1], TINY[name][1])
    transform = timm.data.create_transform(**config)
    x = torch.stack([transform(img) for img in decoded_images(samples)])
    return open_store(out), model, x


def test_a_pooling_head_model_stores_its_query_attention(tmp_path):
    store, model, x = extract(tmp_path, "adapted_siglip")
    want = reference(model, x)
    g = store.geometry
    assert (g.prefix, g.layout, g.has_cls) == (0, (), False)
    assert store.meta["attention_query"] == "map"
    close("tokens", store.array("tokens")[:].astype(np.float64), want["tokens"])
    close("attention", store.array("attention")[:].astype(np.float64), want["map"])
    close("pooled/cls", store.array("pooled/cls")[:].astype(np.float64), want["pooled"])


def test_a_mean_pooled_model_without_cls_stores_no_attention(tmp_path):
    store, model, x = extract(tmp_path, "adapted_relpos_gap")
    want = reference(model, x)
    assert store.meta["attention_query"] is None
    assert "attention" not in store
    close("norms", store.array("norms")[:], np.linalg.norm(want["tokens"], axis=-1))
    close("pooled/cls", store.array("pooled/cls")[:], want["pooled"])


def test_a_distillation_token_is_not_a_register(tmp_path):
    store, model, x = extract(tmp_path, "adapted_deit_distilled")
    g = store.geometry
    assert store.meta["prefix_layout"] == ["cls", "distillation"]
    assert (g.prefix, g.registers) == (2, 0)
    assert store.array("pooled/registers").shape == (4, 0, g.dim)
    close("attention", store.array("attention")[:].astype(np.float64),
          reference(model, x)["cls"])


def test_chosen_blocks_store_their_tokens_norms_and_attention(tmp_path):
    store, model, x = extract(tmp_path, "adapted_dinov3", blocks=(1, -1))
    assert store.meta["blocks"] == [0, 2] and store.geometry.chosen == (0, 2)
    seen = []
    attn = model.blocks[0].attn
    attn.fused_attn = False
    attn.attn_drop.register_forward_hook(lambda m, a, o: seen.append(a[0]))
    with torch.no_grad():
        _, inter = model.forward_intermediates(x, indices=[0, 2], norm=False, output_fmt="NLC",
                                               return_prefix_tokens=True)
    tokens = np.stack([torch.cat([pre, pat], 1).double().numpy() for pat, pre in inter], 1)
    close("tokens", store.array("chosen/tokens")[:].astype(np.float64), tokens)
    close("norms", store.array("chosen/norms")[:], np.linalg.norm(tokens, axis=-1))
    first = seen[0][:, :, 0].double().mean(1).numpy()
    close("attention", store.array("chosen/attention")[:, 0].astype(np.float64), first)
    np.testing.assert_array_equal(store.array("chosen/attention")[:, 1],
                                  store.array("attention")[:])


@pytest.mark.parametrize("blocks, words", [("0", "give 1 to 3"), ("4", "has 3 blocks"),
                                           ("x", "block numbers separated by commas")])
def test_bad_blocks_are_refused_before_any_work(tmp_path, blocks, words):
    from vitreg.cli import cli

    shard = write_shard(tmp_path / "s.tar", image_samples(2))
    result = CliRunner().invoke(cli, ["extract", shard, "--model", "adapted_dinov3", "--weights",
                                       "random", "--out", str(tmp_path / "o"), "--blocks",
                                       blocks])
    assert result.exit_code == 2, result.output
    assert words in result.output
    assert not (tmp_path / "o").exists()


def test_readers_take_a_chosen_block(tmp_path):
    from vitreg.cache.errors import InputError
    from vitreg.cli import cli

    store, _, _ = extract(tmp_path, "adapted_dinov3", blocks=(1,))
    first = store.at_block(1)
    np.testing.assert_array_equal(first.array("tokens")[:], store.array("chosen/tokens")[:, 0])
    batch = next(first.batches(["norms", "attention"]))
    np.testing.assert_array_equal(batch["norms"], store.array("chosen/norms")[batch["row"], 0])
    g = store.geometry
    patch_norms = store.array("chosen/norms")[:, 0, g.prefix:]
    assert first.threshold() == pytest.approx(float(np.percentile(patch_norms, 98)))
    assert store.at_block(-1) is store and store.at_block(3) is store
    from vitreg.probe.setup import store_setup  # a probe's result names the block it read
    assert store_setup(first)["block"] == 1 and store_setup(store)["block"] is None
    with pytest.raises(InputError, match="holds the tokens of blocks 1 .*--blocks -2"):
        store.at_block(-2)
    with pytest.raises(InputError, match="has 3 blocks"):
        store.at_block(4)
    result = CliRunner().invoke(cli, ["analysis", "norms", store.url, "--block", "1",
                                      "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    info = CliRunner().invoke(cli, ["info", store.url], terminal_width=200)
    assert "chosen blocks" in info.output and "cls, register, register" in info.output
