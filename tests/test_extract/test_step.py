"""The device step: no host sync per batch, values as a plain copy gives them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tests.tiny_models  # noqa: F401
from vitreg.extract.capture import Capture, Float16OverflowError
from vitreg.extract.model import build_model
from vitreg.extract.step import CountSyncs, Step, syncs_per_step

DTYPES = {"tokens": "float16", "norms": "float32", "attention": "float16",
          "neighbor_cos": "float16", "pooled/cls": "float32", "pooled/patch_mean": "float32",
          "pooled/registers": "float32", "pixels": "uint8", "blocks/norms": "float16",
          "qkv_norms": "float16", "blocks/qkv_norms": "float16"}


def make_step(model: str = "tiny_dinov2_reg4", **kwargs) -> tuple[Step, int]:
    loaded = build_model(model, weights="random")
    capture = Capture(loaded, device=torch.device("cpu"), precision="fp32", **kwargs)
    return Step(capture, DTYPES), loaded.geometry.img_size


def batches(size: int, n: int, img: int):
    gen = torch.Generator().manual_seed(0)
    for i in range(n):
        images = torch.randint(0, 256, (size, 3, img, img), dtype=torch.uint8, generator=gen)
        yield images, np.arange(i * size, (i + 1) * size)


def test_the_counter_sees_the_old_per_array_copies():
    counter = CountSyncs()
    x = torch.ones(4, 3)
    with counter:
        x.to(torch.float16).cpu().numpy()
        bool(x.abs().amax() <= 65504)
        x[x > 0]
    assert counter.calls == {"cpu": 1, "numpy": 1, "bool": 1, "mask": 1}


@pytest.mark.parametrize("with_options", [(), ("pixels", "blocks", "qkv", "blocks_qkv")])
def test_a_pipelined_step_makes_no_host_sync(with_options):
    # ViT-L-shaped batch of 256 rows would be slow here; the count does not
    # depend on the batch size, only on the arrays.
    step, img = make_step(with_options=with_options)
    assert syncs_per_step(step, list(batches(8, 5, img))) == {}


def test_the_step_returns_what_a_plain_cast_and_copy_give():
    step, img = make_step(with_options=("pixels", "blocks", "qkv"))
    images, rows = next(batches(5, 1, img))
    values = step.finish(step.launch(images, rows))
    reference = step.capture(images, rows)
    for name, tensor in reference.items():
        want = tensor.to(getattr(torch, step.dtypes[name])).cpu().numpy()
        assert values[name].tobytes() == want.tobytes(), name


def test_a_smaller_last_batch_and_two_buffer_sets_keep_their_rows():
    step, img = make_step()
    (a, ra), (b, rb), (c, rc) = batches(6, 3, img)
    first = step.launch(a, ra)
    second = step.launch(b, rb)
    got_a = {k: v.copy() for k, v in step.finish(first).items()}
    got_b = step.finish(second)
    last = step.finish(step.launch(c[:2], rc[:2]))
    assert last["tokens"].shape[0] == 2
    for images, rows, got in ((a, ra, got_a), (b, rb, got_b)):
        want = step.capture(images, rows)["tokens"].to(torch.float16).numpy()
        np.testing.assert_array_equal(got["tokens"], want)


def test_an_overflow_is_still_refused():
    step, img = make_step("tiny_dino_loud")
    images, rows = next(batches(2, 1, img))
    with pytest.raises(Float16OverflowError, match="--dtype float32"):
        step.finish(step.launch(images, rows))


def test_sampled_tokens_read_their_top_k_on_the_host_once_per_step():
    """The documented exception: the draw of `--tokens sampled:K` is NumPy's."""
    step, img = make_step(token_mode="sampled:4")
    assert syncs_per_step(step, list(batches(4, 4, img))) == {"cpu": 1, "numpy": 1}
