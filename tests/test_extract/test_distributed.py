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
