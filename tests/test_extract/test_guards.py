"""Guards for GPU nodes, checked without one: shared memory and TF32."""

from __future__ import annotations

import shutil
from collections import namedtuple

import pytest
import torch

import tests.tiny_models  # noqa: F401
from tests.conftest import image_samples, write_shard
from vitreg.core.errors import UsageError
from vitreg.extract.capture import exact_float32
from vitreg.extract.checks import check_shared_memory
from vitreg.extract.run import run_extract

Usage = namedtuple("Usage", "total used free")


def test_a_small_dev_shm_is_refused_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(64 * 2**20, 0, 64 * 2**20))
    vit_l_batch = 256 * 3 * 224 * 224  # 38.5 MB
    with pytest.raises(UsageError, match=r"--shm-size=.*--workers 0"):
        check_shared_memory(2, vit_l_batch, shm=str(tmp_path))
    check_shared_memory(0, vit_l_batch, shm=str(tmp_path))  # no workers: no shared memory
    check_shared_memory(2, 2**20, shm=str(tmp_path))  # small batches fit


def test_the_run_stops_before_creating_the_store(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(2**20, 0, 2**20))
    shard = write_shard(tmp_path / "s.tar", image_samples(4))
    with pytest.raises(UsageError, match="/dev/shm"):
        run_extract(shards=[shard], model="tiny_dinov2_reg4", out=str(tmp_path / "out"),
                    weights="random", workers=2, batch_size=64, progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("precision", "device", "tf32"), [
    ("fp32", "cuda", False), ("bf16", "cuda", True), ("fp32", "cpu", True)])
def test_fp32_on_cuda_turns_tf32_off(precision, device, tf32):
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32
    matmul.allow_tf32 = cudnn.allow_tf32 = True
    try:
        exact_float32(precision, torch.device(device))
        assert (matmul.allow_tf32, cudnn.allow_tf32) == (tf32, tf32)
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved


def test_auto_settings_on_a_cpu_and_on_a_gpu(monkeypatch):
    from vitreg.cache import Geometry
    from vitreg.extract import run as run_mod

    vit_l = Geometry(registers=4, grid=(16, 16), dim=1024, depth=24, img_size=224)
    assert run_mod.loop_settings("auto", None, torch.device("cpu"), vit_l) == (0, 32)
    assert run_mod.loop_settings(3, 8, torch.device("cuda", 1), vit_l) == (3, 8)
    monkeypatch.setattr(run_mod, "usable_cores", lambda: 16)
    props = {"total_memory": 141 * 2**30}
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device: type("Props", (), props))
    assert run_mod.loop_settings("auto", None, torch.device("cuda", 0), vit_l) == (15, 256)
    props["total_memory"] = 8 * 2**30  # a small GPU gets smaller batches
    assert run_mod.loop_settings("auto", None, torch.device("cuda", 0), vit_l)[1] == 64
