"""Many processes, one store: torchrun ranks or independent jobs (a SLURM
array), each writing a contiguous, chunk-aligned range of rows.

Under torchrun on a GPU node each rank claims its own GPU
(`torch.cuda.set_device(LOCAL_RANK)`) before anything touches CUDA, so no
rank opens a context on GPU 0 (fatal in exclusive-process mode). The ranks
exchange no tensors, only barriers: those run on gloo, on the host, with a
timeout longer than any preparation (rank 0 counting shards and creating the
store, ranks waiting for the slowest), not on NCCL and its 10-minute watchdog.

The final barrier (every rank done before rank 0 marks the store complete) is
bounded by what the slowest rank can need (`final_timeout`): twice the time
this rank would take for the largest range of rows at its own rate, plus
`FINAL_SLACK`; a rank later than that is taken for dead, and the others stop
with an error that says so (the rows written are kept; a rerun resumes).

The ranks of one node share its cores and its `/dev/shm`: decode workers
and the shared-memory check are sized by `LOCAL_WORLD_SIZE` (`Ranks.local_world`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from vitreg.cache import VitregError

#: How long a barrier may wait: `VITREG_BARRIER_HOURS` (default 48).
BARRIER_HOURS = 48.0


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    torchrun: bool = False  # ranks talk (barriers); else independent jobs
    local_rank: int = 0
    owns_group: bool = False  # vitreg started the process group, and ends it
    local_world: int = 1  # ranks on this node (torchrun's LOCAL_WORLD_SIZE)

    @property
    def leader(self) -> bool:
        return self.rank == 0


def barrier_timeout() -> timedelta:
    return timedelta(hours=float(os.environ.get("VITREG_BARRIER_HOURS", BARRIER_HOURS)))


def claim_local_gpu(local_rank: int) -> None:
    """Make the local rank's GPU this process's current device, first."""
    if torch.cuda.is_available() and local_rank < torch.cuda.device_count():
        torch.cuda.set_device(local_rank)


def detect_ranks(rank: int | None = None, world: int | None = None) -> Ranks:
    """torchrun's environment if present, else `--rank/--world-size`, else one process."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        if rank is not None or world is not None:
            raise VitregError("--rank/--world-size are for independent jobs; torchrun sets them")
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        claim_local_gpu(local_rank)
        owns = not dist.is_initialized()
        if owns:
            dist.init_process_group(backend="gloo", timeout=barrier_timeout())
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        return Ranks(dist.get_rank(), dist.get_world_size(), True, local_rank, owns,
                     max(1, local_world))
    world = world or 1
    rank = rank or 0
    if not 0 <= rank < world:
        raise VitregError(f"--rank {rank} is outside 0..{world - 1}")
    return Ranks(rank, world)


def barrier(ranks: Ranks) -> None:
    if ranks.torchrun:
        dist.barrier()


#: What the final barrier waits beyond the slowest rank's expected time.
FINAL_SLACK = timedelta(minutes=10)


def final_timeout(largest_range: int, own_rows: int, own_seconds: float) -> timedelta:
    """How long the final barrier waits for the other ranks: twice the
    seconds this rank would need for the largest rank's range at its own rate
    (a resumed run may have left one rank all its rows and another none), plus
    `FINAL_SLACK`; `barrier_timeout()` at most, and when this rank had no rows
    to time itself on."""
    longest = barrier_timeout()
    if own_rows <= 0 or own_seconds <= 0:
        return longest
    expected = timedelta(seconds=2 * largest_range * own_seconds / own_rows)
    return min(longest, expected + FINAL_SLACK)


def final_barrier(ranks: Ranks, timeout: timedelta) -> None:
    """Wait for every rank to finish its rows, at most `timeout`; gloo's
    monitored barrier names the ranks that did not arrive. (A process group
    the caller started on another backend gets a plain barrier.)"""
    if not ranks.torchrun:
        return
    if dist.get_backend() != "gloo":  # a group the caller started on NCCL: no bound
        dist.barrier()
        return
    try:
        dist.monitored_barrier(timeout=timeout)
    except RuntimeError as exc:
        raise VitregError(
            f"rank {ranks.rank}: the other ranks did not finish within {timeout} of this one "
            f"({exc}); the rows written are kept: run the same command again to finish the "
            "rest (VITREG_BARRIER_HOURS bounds the wait)") from exc


def shutdown(ranks: Ranks) -> None:
    """End the process group vitreg started (torchrun warns, and a node's
    next job may hang on its sockets, when a rank exits without it)."""
    if ranks.owns_group and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def ranks_of(rank: int | None = None, world: int | None = None) -> Iterator[Ranks]:
    """`detect_ranks`, then `shutdown` however the run ends."""
    ranks = detect_ranks(rank, world)
    try:
        yield ranks
    finally:
        shutdown(ranks)
