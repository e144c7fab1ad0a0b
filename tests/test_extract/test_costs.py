"""`--workers auto` on a CPU: measured decode and forward costs choose the
workers, and torch's threads leave the workers their cores."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import tests.tiny_models  # noqa: F401
from tests.conftest import image_samples, write_shard
from vitreg.cache import Geometry
from vitreg.extract import run as run_mod
from vitreg.extract.costs import Costs, measure_costs
from vitreg.extract.model import build_model
from vitreg.extract.plan import plan_shards
from vitreg.extract.step import Step

CPU = torch.device("cpu")
TINY = Geometry(registers=4, grid=(4, 4), dim=32, depth=2, img_size=64)


def test_measured_costs_are_the_cpu_time_of_decoding_and_of_the_forward_pass(tmp_path):
    shard = write_shard(tmp_path / "s.tar", image_samples(20))
    plan = plan_shards([shard])
    loaded = build_model("tiny_dinov2_reg4", weights="random", img_size=None, seed=42)
    costs = measure_costs(plan, loaded, samples=16, forward_batch=8)
    # an independent figure: decoding the same 16 samples with PIL alone
    # (no transform) costs less, and not by orders of magnitude
    from vitreg.core.samples import decode_image

    samples = _raw_samples(shard)[:16]
    start = time.process_time()
    for sample in samples:
        decode_image(sample)
    pil_ms = (time.process_time() - start) / len(samples) * 1e3
    assert 0 < costs.decode_ms < 100
    assert costs.decode_ms > 0.2 * pil_ms
    assert costs.forward_ms > 0


def _raw_samples(shard: str) -> list[dict]:
    from vitreg.core.samples import shard_samples

    return list(shard_samples(shard))


@pytest.mark.parametrize(("costs", "workers"), [
    (Costs(decode_ms=4.0, forward_ms=0.4), "all cores"),  # a one-block model
    (Costs(decode_ms=4.0, forward_ms=60.0), 0),  # ViT-S at 224 px
    (None, 0),  # a run too small to measure
])
def test_auto_workers_on_a_cpu_follow_the_costs(monkeypatch, costs, workers):
    monkeypatch.setattr(run_mod, "usable_cores", lambda: 4)
    chosen = run_mod.loop_settings("auto", None, CPU, TINY, costs=costs)
    assert chosen == (4 if workers == "all cores" else workers, run_mod.CPU_BATCH)
    assert run_mod.loop_settings(3, None, CPU, TINY, costs=costs)[0] == 3  # a number stays


def test_small_runs_are_not_measured(tmp_path, monkeypatch):
    monkeypatch.setattr(run_mod, "measure_costs", lambda *a, **k: pytest.fail("measured"))
    shard = write_shard(tmp_path / "s.tar", image_samples(6))
    summary = run_mod.run_extract(shards=[shard], model="tiny_dinov2_reg4", out=str(tmp_path / "o"),
                                  weights="random", progress=False)
    assert summary.ok == 6


@pytest.mark.parametrize(("workers", "costs", "inside"), [
    (0, Costs(4.0, 0.4), None),  # no workers: torch keeps its threads
    (1, Costs(4.0, 0.4), 3),  # decode-bound: the cores one worker leaves
    (3, Costs(4.0, 0.4), 1),
    (1, Costs(4.0, 60.0), None),  # forward-bound: the model keeps every core
    ("auto", Costs(4.0, 0.4), 1),  # a worker per core; torch still gets one
])
def test_torch_threads_leave_the_workers_their_cores(tmp_path, monkeypatch, workers, costs,
                                                     inside):
    monkeypatch.setattr(run_mod, "usable_cores", lambda: 4)
    monkeypatch.setattr(run_mod, "WORKER_ROWS", 0)
    monkeypatch.setattr(run_mod, "measure_costs", lambda *a, **k: costs)
    before = torch.get_num_threads()
    seen = []
    launch = Step.launch

    def recording(self, images, rows):
        seen.append(torch.get_num_threads())
        return launch(self, images, rows)

    monkeypatch.setattr(Step, "launch", recording)
    shard = write_shard(tmp_path / "s.tar", image_samples(8))
    run_mod.run_extract(shards=[shard], model="tiny_dinov2_reg4", out=str(tmp_path / "o"),
                        weights="random", progress=False, workers=workers, batch_size=4)
    assert seen and set(seen) == {before if inside is None else inside}
    assert torch.get_num_threads() == before  # restored for the caller


def test_no_thread_change_on_a_gpu():
    before = torch.get_num_threads()
    threads = run_mod.loop_threads(4, torch.device("cuda", 0), Costs(4.0, 0.4))
    with run_mod.intra_op_threads(threads):
        assert torch.get_num_threads() == before


def test_a_layout_read_refuses_a_shard_cut_after_planning(tmp_path):
    path = tmp_path / "s.tar"
    write_shard(path, image_samples(4))
    plan = plan_shards([str(path)])
    layout = plan.layouts[0]
    with open(path, "rb") as file:
        whole = [layout.read(file, i, str(path)) for i in range(4)]
    assert [s["__key__"] for s in whole] == plan.keys()
    data = path.read_bytes()
    path.write_bytes(data[: int(layout.offset[-1]) + 2])  # the last member loses its end
    with open(path, "rb") as file, pytest.raises(ValueError, match="shorter than when"):
        layout.read(file, 3, str(path))
    np.testing.assert_array_equal(np.diff(layout.first), 3)  # jpg, cls and json


def test_unreadable_first_samples_measure_nothing(tmp_path):
    shard = write_shard(tmp_path / "s.tar", image_samples(4))
    plan = plan_shards([shard])
    loaded = build_model("tiny_dinov2_reg4", weights="random", img_size=None, seed=42)
    (tmp_path / "s.tar").unlink()  # gone after planning
    assert measure_costs(plan, loaded) is None
    assert run_mod.loop_settings("auto", None, CPU, TINY, costs=None)[0] == 0


def test_the_choice_is_printed_with_the_measured_costs(monkeypatch, capsys):
    monkeypatch.setattr(run_mod, "usable_cores", lambda: 4)
    run_mod.loop_settings("auto", None, CPU, TINY, announce=True, costs=Costs(4.0, 0.4))
    said = capsys.readouterr().err
    assert "decoding 4.0 CPU ms/img, the model 0.4" in said
    assert "torch on 1 thread(s) beside the workers" in said and "4 decode worker(s)" in said
    run_mod.loop_settings(2, 8, CPU, TINY, announce=True, costs=Costs(4.0, 60.0))
    said = capsys.readouterr().err
    assert "the model 60.0" in said and "thread" not in said and "auto" not in said
