"""Data-parallel set-up from the environment (torchrun, or a submitit job on Slurm or this machine).

Single process when ``WORLD_SIZE`` is unset or 1: nothing is initialized and every collective in the
library is a no-op (house style 8). Multi-process: ``gloo`` on CPU, ``nccl`` on CUDA.

Inside a job, :func:`export_job_world` turns the scheduler's variables into the ``env://`` ones:

| torch.distributed | Slurm (through submitit's ``SlurmJobEnvironment``) |
|---|---|
| ``RANK`` | ``SLURM_PROCID`` |
| ``WORLD_SIZE`` | ``SLURM_NTASKS`` (= nodes x tasks per node) |
| ``LOCAL_RANK`` | ``SLURM_LOCALID``; the task's GPU is ``cuda:LOCAL_RANK`` among the job's visible GPUs |
| ``LOCAL_WORLD_SIZE`` | ``SLURM_NTASKS / SLURM_JOB_NUM_NODES`` |
| ``MASTER_ADDR`` | the first host of ``SLURM_JOB_NODELIST`` |
| ``MASTER_PORT`` | ``$MASTER_PORT`` if set, else a port in 20000-60000 drawn from ``SLURM_JOB_ID`` (same in all tasks) |
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["World", "check_gpus", "export_job_world", "init_distributed", "wrap_ddp"]


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def export_job_world() -> World:
    """Inside a submitit task: export ``MASTER_ADDR``/``MASTER_PORT``/``RANK``/``WORLD_SIZE``/``LOCAL_RANK``.

    The job's own variables win over any inherited from the submitting shell (``sbatch`` exports its whole
    environment, so a stale ``RANK`` there must not be taken for this task's). ``CUDA_VISIBLE_DEVICES`` is
    left as Slurm set it: every task sees the node's allocated GPUs and uses ``cuda:LOCAL_RANK``.
    """
    import submitit

    env = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    return World(rank=env.rank, world_size=env.world_size, local_rank=env.local_rank)


def check_gpus(gpus_per_node: int, local_rank: int = 0) -> None:
    """Fail at job start, naming the node, when the job asked for GPUs that this process cannot see."""
    if gpus_per_node <= 0:
        return
    import socket

    seen = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if seen <= local_rank:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
        raise RuntimeError(f"launcher.gpus_per_node={gpus_per_node} but task {local_rank} on {socket.gethostname()} "
                           f"sees {seen} CUDA device(s) (CUDA_VISIBLE_DEVICES={visible}, torch "
                           f"{torch.__version__}, CUDA build {torch.version.cuda}); set launcher.gpus_per_node=0 to "
                           f"train on CPUs, or run on a GPU partition with a CUDA build of torch")


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
