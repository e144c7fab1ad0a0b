"""Many processes, one store: torchrun ranks or independent jobs (a SLURM
array), each writing a contiguous, chunk-aligned range of rows."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from vitreg.cache import VitregError


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    torchrun: bool = False  # ranks talk (barriers); else independent jobs
    local_rank: int = 0

    @property
    def leader(self) -> bool:
        return self.rank == 0


def detect_ranks(rank: int | None = None, world: int | None = None) -> Ranks:
    """torchrun's environment if present, else `--rank/--world-size`, else one process."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        if rank is not None or world is not None:
            raise VitregError("--rank/--world-size are for independent jobs; torchrun sets them")
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        return Ranks(dist.get_rank(), dist.get_world_size(), True, local_rank)
    world = world or 1
    rank = rank or 0
    if not 0 <= rank < world:
        raise VitregError(f"--rank {rank} is outside 0..{world - 1}")
    return Ranks(rank, world)


def barrier(ranks: Ranks) -> None:
    if ranks.torchrun:
        dist.barrier()
