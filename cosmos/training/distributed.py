"""Data-parallel set-up from the environment (torchrun, or a submitit job on Slurm or this machine).

Single process when ``WORLD_SIZE`` is unset or 1: nothing is initialized and every collective in the
library is a no-op (house style 8). Multi-process: ``gloo`` on CPU, ``nccl`` on CUDA.

Inside a job, :func:`export_job_world` turns the scheduler's variables into the ``env://`` ones:

| torch.distributed | Slurm (through submitit's ``SlurmJobEnvironment``) |
|---|---|
| ``RANK`` | ``SLURM_PROCID`` |
| ``WORLD_SIZE`` | ``SLURM_NTASKS`` (= nodes x tasks per node) |
| ``LOCAL_RANK`` | ``SLURM_LOCALID``; the task's GPU: see :func:`cuda_index` |
| ``LOCAL_WORLD_SIZE`` | ``SLURM_NTASKS / SLURM_JOB_NUM_NODES`` |
| ``MASTER_ADDR`` | the first host of ``SLURM_JOB_NODELIST`` |
| ``MASTER_PORT`` | a port in 20000-60000 drawn from ``SLURM_JOB_ID`` (same in all tasks); an inherited one is ignored |
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["World", "barrier", "check_gpus", "cuda_index", "export_job_world", "init_distributed", "process_rank",
           "wrap_ddp"]


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

    Every one of them comes from the job, never from the submitting shell: ``sbatch`` exports that shell's
    whole environment, so a stale ``RANK`` there must not be taken for this task's, and a ``MASTER_PORT``
    there would give every job of a queued grid the same port ("address already in use" when two land on
    one node). ``MASTER_PORT`` is therefore dropped and drawn from the job id, the same in all its tasks.
    ``CUDA_VISIBLE_DEVICES`` is left as Slurm set it (see :func:`cuda_index`).
    """
    import submitit

    os.environ.pop("MASTER_PORT", None)  # submitit's TorchDistributedEnvironment would take it as is
    env = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    return World(rank=env.rank, world_size=env.world_size, local_rank=env.local_rank)


def cuda_index(local_rank: int) -> int:
    """The CUDA device of the task with ``local_rank`` on its node, among the devices this process sees.

    ``local_rank`` when the task sees all of its node's GPUs (more than ``local_rank`` devices), ``0`` when
    it sees exactly one (clusters that bind one GPU per task, e.g. ``--gpu-bind=single:1``). Raises with
    the visible devices and ``CUDA_VISIBLE_DEVICES`` otherwise.
    """
    seen = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if seen > local_rank:
        return local_rank
    if seen == 1:
        return 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
    raise RuntimeError(f"task with local rank {local_rank} sees {seen} CUDA device(s) (CUDA_VISIBLE_DEVICES="
                       f"{visible}): it needs either all of its node's GPUs (more than {local_rank}) or exactly the "
                       f"one bound to it; run one task per GPU (launcher.tasks_per_node = launcher.gpus_per_node) "
                       f"and check the cluster's GPU binding (sbatch_extra gpu-bind)")


def check_gpus(gpus_per_node: int, local_rank: int = 0) -> None:
    """Fail at job start, naming the node, when the job asked for GPUs that this process cannot use."""
    if gpus_per_node <= 0:
        return
    import socket

    seen = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if seen == 0:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
        raise RuntimeError(f"launcher.gpus_per_node={gpus_per_node} but task {local_rank} on {socket.gethostname()} "
                           f"sees {seen} CUDA device(s) (CUDA_VISIBLE_DEVICES={visible}, torch "
                           f"{torch.__version__}, CUDA build {torch.version.cuda}); set launcher.gpus_per_node=0 to "
                           f"train on CPUs, or run on a GPU partition with a CUDA build of torch")
    try:
        cuda_index(local_rank)
    except RuntimeError as err:
        raise RuntimeError(f"launcher.gpus_per_node={gpus_per_node} on {socket.gethostname()}: {err}") from None


def init_distributed(device: torch.device) -> World:
    """Join the process group described by ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` if any.

    Inside a plain ``srun`` step of several tasks (``SLURM_STEP_NUM_TASKS > 1``, no ``WORLD_SIZE``) the step's
    tasks are the ranks (:func:`export_job_world`); a batch script's own process is not in a step, so a
    single-process ``dvc repro`` inside an allocation stays single.

    ``device`` picks the backend (``nccl`` on CUDA, else ``gloo``). On CUDA the process first makes its own
    GPU (:func:`cuda_index` of ``LOCAL_RANK``) the current device, so NCCL does not put every rank on ``cuda:0``.
    """
    if "WORLD_SIZE" not in os.environ and int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")) > 1:
        # A plain `srun -n N python stages/...`: the step's tasks are the ranks. submitit reads a Slurm task's
        # variables only when told it is in one (its jobs set this themselves).
        os.environ.setdefault("SUBMITIT_EXECUTOR", "slurm")
        export_job_world()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return World()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(cuda_index(local_rank))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://")
    return World(rank=rank, world_size=world_size, local_rank=local_rank)


def barrier(world: World) -> None:
    """Wait for every rank (a no-op in a single process), e.g. until rank 0 has cleared stale checkpoints."""
    if world.world_size > 1 and dist.is_initialized():
        dist.barrier()


def process_rank() -> int:
    """This process's global rank under any launch, read from the environment before any process group exists.

    ``RANK`` (torchrun, and submitit tasks once :func:`export_job_world` ran), else ``SLURM_PROCID`` (the task's
    rank in a plain ``srun`` step; 0 in a batch script), else 0.
    """
    for key in ("RANK", "SLURM_PROCID"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def wrap_ddp(model: nn.Module, world: World, device: torch.device, find_unused_parameters: bool = False) -> nn.Module:
    """DDP-wrap ``model`` when there is more than one rank (the student's keys then carry ``module.``).

    ``find_unused_parameters`` must be on when an ablation leaves parameters out of the loss (e.g. the
    cross-attention modules without ``cross_attn``); full COSMOS uses every parameter, as the reference.
    """
    if world.world_size == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused_parameters)
