"""Data-parallel set-up from the environment (torchrun, or submitit's ``TorchDistributedEnvironment``).

Single process when ``WORLD_SIZE`` is unset or 1: nothing is initialized and every collective in the
library is a no-op (house style 8). Multi-process: ``gloo`` on CPU, ``nccl`` on CUDA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["World", "init_distributed", "wrap_ddp"]


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> World:
    """Join the process group described by ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return World()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://")
    return World(rank=rank, world_size=world_size, local_rank=local_rank)


def wrap_ddp(model: nn.Module, world: World, device: torch.device, find_unused_parameters: bool = False) -> nn.Module:
    """DDP-wrap ``model`` when there is more than one rank (the student's keys then carry ``module.``).

    ``find_unused_parameters`` must be on when an ablation leaves parameters out of the loss (e.g. the
    cross-attention modules without ``cross_attn``); full COSMOS uses every parameter, as the reference.
    """
    if world.world_size == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused_parameters)
