"""The device step: no host sync per batch, values as a plain copy gives them."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import tests.tiny_models  # noqa: F401
from tests.syncs import CountSyncs, syncs_per_step
from vitreg.extract.capture import Capture, Float16OverflowError
from vitreg.extract.model import build_model
from vitreg.extract.step import Step, wait_event

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
    assert syncs_per_step(step, list(batches(8, 6, img))) == {}


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
    assert syncs_per_step(step, list(batches(4, 6, img))) == {"cpu": 1, "numpy": 1}


class SlowEvent:
    """A device step that ends `seconds` from now, as seen through `query()`."""

    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def query(self) -> bool:
        return time.perf_counter() >= self.end


def cpu_while(wait, seconds: float) -> tuple[float, float]:
    """(CPU seconds of this thread, wall seconds) of `wait` on a 0.4 s fake step."""
    cpu, wall = time.thread_time(), time.perf_counter()
    wait(SlowEvent(seconds))
    return time.thread_time() - cpu, time.perf_counter() - wall


def test_waiting_for_the_device_does_not_spin():
    def spinning(event):  # what a default CUDA event's synchronize() does
        while not event.query():
            pass

    cpu, wall = cpu_while(wait_event, 0.4)
    spun, _ = cpu_while(spinning, 0.3)
    assert wall >= 0.4
    # the poll wakes 800 times in 0.4 s (20 ms of CPU in a CI run); a spin burns all 0.4 s
    assert cpu < 0.15 * wall, f"{cpu:.3f} CPU s while waiting {wall:.3f} s"
    # the measure sees a spinning wait, even on a loaded machine (a quarter of a core)
    assert spun > 3 * cpu and spun > 0.05, (spun, cpu)


def test_the_step_waits_for_its_copies_without_spinning():
    step, img = make_step()
    images, rows = next(batches(2, 1, img))
    staged = step.launch(images, rows)
    staged.event = SlowEvent(0.3)  # as if the copies were queued on a busy GPU
    cpu = time.thread_time()
    step.finish(staged)
    assert time.thread_time() - cpu < 0.05
    assert step.times.event >= 0.25  # the event's 0.3 s began just before finish() did


def test_the_step_refills_a_buffer_set_only_once_the_writer_lets_go():
    step, img = make_step()
    step = Step(step.capture, DTYPES, depth=2)
    data = list(batches(3, 3, img))
    staged = step.launch(*data[0])
    first = step.finish(staged)
    snapshot = {name: value.copy() for name, value in first.items()}
    seen = []

    class Writing:
        def wait(self) -> float:  # the writer still reads `first` until now
            seen.append(all(np.array_equal(first[k], v) for k, v in snapshot.items()))
            return 0.0

    step.hold(staged, Writing())
    step.finish(step.launch(*data[1]))  # the other buffer set: no wait
    assert seen == []
    step.finish(step.launch(*data[2]))  # refills `first`'s set: waits first
    assert seen == [True]
    assert not np.array_equal(first["tokens"], snapshot["tokens"])  # then refilled
