"""torchrun on a GPU node, with CUDA and the process group mocked."""

from __future__ import annotations

from datetime import timedelta

import pytest
import torch
import torch.distributed as dist

from vitreg.core.device import resolve_device
from vitreg.extract import distributed


@pytest.fixture
def node(monkeypatch):
    """A 4-GPU node as torchrun's rank 1 sees it; records what vitreg calls."""
    calls: list[tuple] = []
    state = {"initialized": False}
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.append(("set_device", i)))

    def init(backend, **kwargs):
        calls.append(("init", backend, kwargs.get("timeout")))
        state["initialized"] = True

    def destroy():
        calls.append(("destroy",))
        state["initialized"] = False

    monkeypatch.setattr(dist, "is_initialized", lambda: state["initialized"])
    monkeypatch.setattr(dist, "init_process_group", init)
    monkeypatch.setattr(dist, "destroy_process_group", destroy)
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "barrier", lambda: calls.append(("barrier",)))
    return calls


def test_a_rank_claims_its_gpu_before_the_group_and_barriers_cannot_time_out(node):
    with distributed.ranks_of() as ranks:
        assert (ranks.rank, ranks.world, ranks.local_rank, ranks.torchrun) == (1, 2, 1, True)
        distributed.barrier(ranks)
    assert node[0] == ("set_device", 1)
    _, backend, timeout = node[1]
    assert backend == "gloo" and timeout >= timedelta(hours=24)
    assert node[2:] == [("barrier",), ("destroy",)]


def test_the_group_ends_when_the_run_fails(node):
    with pytest.raises(RuntimeError), distributed.ranks_of():
        raise RuntimeError("a rank failed")
    assert node[-1] == ("destroy",)


def test_a_group_someone_else_started_is_left_alone(node, monkeypatch):
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    with distributed.ranks_of() as ranks:
        assert not ranks.owns_group
    assert ("destroy",) not in node and not any(c[0] == "init" for c in node)


def test_the_barrier_timeout_can_be_set(monkeypatch):
    monkeypatch.setenv("VITREG_BARRIER_HOURS", "2")
    assert distributed.barrier_timeout() == timedelta(hours=2)


@pytest.mark.parametrize(("asked", "local_rank", "device"), [
    ("cuda", 3, "cuda:3"), ("auto", 2, "cuda:2"), ("cuda:0", 3, "cuda:0"), ("cpu", 1, "cpu"),
])
def test_cuda_means_the_local_ranks_gpu(node, asked, local_rank, device):
    assert resolve_device(asked, local_rank=local_rank) == torch.device(device)


def test_ranks_know_how_many_share_their_node(node, monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    with distributed.ranks_of() as ranks:
        assert ranks.local_world == 8
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    with distributed.ranks_of() as ranks:
        assert ranks.local_world == 1


@pytest.mark.parametrize(("ranks_on_node", "workers"), [(1, 15), (4, 3), (8, 1), (16, 1)])
def test_decode_workers_are_the_ranks_share_of_the_node(monkeypatch, ranks_on_node, workers):
    from vitreg.cache import Geometry
    from vitreg.extract import run as run_mod

    vit_l = Geometry(registers=4, grid=(16, 16), dim=1024, depth=24, img_size=224)
    monkeypatch.setattr(run_mod, "usable_cores", lambda: 16)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device: type("Props", (), {"total_memory": 80 * 2**30}))
    chosen = run_mod.loop_settings("auto", None, torch.device("cuda", 0), vit_l,
                                   ranks_on_node=ranks_on_node)
    assert chosen[0] == workers  # 16 cores: each rank its share, one for its main process


def test_dev_shm_is_checked_for_every_rank_of_the_node(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from vitreg.core.errors import UsageError
    from vitreg.extract.checks import PREFETCH, check_shared_memory

    batch = 256 * 3 * 224 * 224
    one_rank = 2 * PREFETCH * batch + batch
    usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(4 * one_rank, 0, 4 * one_rank))
    check_shared_memory(2, batch, shm=str(tmp_path), ranks_on_node=4)  # just fits
    with pytest.raises(UsageError, match="8 ranks of 2 decode worker"):
        check_shared_memory(2, batch, shm=str(tmp_path), ranks_on_node=8)


def test_the_final_barrier_waits_for_the_slowest_range_and_no_longer(monkeypatch):
    monkeypatch.delenv("VITREG_BARRIER_HOURS", raising=False)
    # 1,000 rows in 100 s here, the largest range 3,000 rows: 2 x 300 s + the slack
    assert distributed.final_timeout(3000, 1000, 100.0) == \
        timedelta(seconds=600) + distributed.FINAL_SLACK
    # a rank that had nothing to do cannot time itself: the long bound
    assert distributed.final_timeout(3000, 0, 0.0) == timedelta(hours=distributed.BARRIER_HOURS)
    monkeypatch.setenv("VITREG_BARRIER_HOURS", "0.1")  # the bound caps it
    assert distributed.final_timeout(10**6, 10, 100.0) == timedelta(hours=0.1)


def test_a_rank_that_never_arrives_stops_the_others_with_a_sentence(node, monkeypatch):
    seen = []

    def monitored(timeout):
        seen.append(timeout)
        raise RuntimeError("Rank 0 failed to pass monitoredBarrier in 600000 ms")

    monkeypatch.setattr(dist, "monitored_barrier", monitored)
    monkeypatch.setattr(dist, "get_backend", lambda: "gloo")
    with distributed.ranks_of() as ranks, pytest.raises(
            distributed.VitregError, match="run the same command again"):
        distributed.final_barrier(ranks, timedelta(minutes=10))
    assert seen == [timedelta(minutes=10)]
    distributed.final_barrier(distributed.Ranks(), timedelta(0))  # one process: no barrier


def test_a_group_on_another_backend_gets_a_plain_final_barrier(node, monkeypatch):
    monkeypatch.setattr(dist, "get_backend", lambda: "nccl")
    with distributed.ranks_of() as ranks:
        distributed.final_barrier(ranks, timedelta(minutes=10))
    assert ("barrier",) in node
