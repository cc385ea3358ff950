"""Joining a job that torchrun or accelerate launched (WORLD_SIZE > 1): the ranks the stages
split work by (collection batches, evaluation samples) and the barriers where they meet."""

from __future__ import annotations

import os
from datetime import timedelta


def launched_world() -> int:
    """How many processes the launcher started (1 when none did)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def join() -> tuple[int, int, bool]:
    """(rank, world, whether this call set the process group up). Each rank takes its own GPU
    where there are enough (LOCAL_RANK); NCCL then, else gloo, which is all the stages need:
    they exchange small objects and wait for each other."""
    world = launched_world()
    if world <= 1:
        return 0, 1, False
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    backend = "gloo"
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % count)
        if count >= int(os.environ.get("LOCAL_WORLD_SIZE", world)):
            backend = "nccl"
    # Ranks wait for each other where one stage ends: allow for long, uneven stages.
    dist.init_process_group(backend, timeout=timedelta(hours=12))
    return dist.get_rank(), dist.get_world_size(), True


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def leave(owned: bool) -> None:
    """End the process group if ``join`` set it up."""
    if owned:
        import torch.distributed as dist

        dist.destroy_process_group()
