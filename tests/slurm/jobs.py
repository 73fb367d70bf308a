"""Functions the Slurm tests submit. A job unpickles its function by module name, so they live here, in an
importable module (``tests.slurm.jobs``; the tests put the repository on the jobs' ``PYTHONPATH``)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import torch

from cosmos.training.preemption import stops_at_step_boundary


def report_world() -> dict[str, Any]:
    """Join the job's process group as the library does and report what this task sees."""
    import torch.distributed as dist

    from cosmos.training.distributed import init_distributed

    world = init_distributed(torch.device("cpu"))
    total = torch.tensor([float(world.rank + 1)])
    dist.all_reduce(total)
    report = {"rank": world.rank, "world_size": world.world_size, "local_rank": world.local_rank,
              "backend": dist.get_backend(), "all_reduce_sum": float(total), "threads": torch.get_num_threads(),
              "hostname": socket.gethostname(), "cwd": os.getcwd(),
              **{k: os.environ.get(k) for k in ("MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE", "SLURM_JOB_ID")}}
    dist.destroy_process_group()
    return report


@stops_at_step_boundary
def pretrain_stalling_once(stall_at: int, marker_dir: str, **kwargs: Any) -> dict[str, Any]:
    """``run_pretrain``; on the job's first attempt every rank stalls before step ``stall_at + 1`` until signalled.

    Each rank writes ``stalled-rank<R>`` when it stalls, so the test knows when to preempt the job; the stall
    ends when the rank has recorded the requeue signal (:data:`cosmos.training.preemption.STOP`), and the step
    then runs to its end, where the run checkpoints and hands over to submitit's requeue. Requeued attempts
    (``attempts-rank<R>`` exists) train straight through, from the newest checkpoint. Every attempt appends ``started at step <N>`` to
    ``starts-rank<R>`` at its first training step: the trainer's position then, i.e. the step it resumed from
    (0 for a fresh start), so the test can tell a resumed attempt from one that started over.
    """
    from cosmos.training.loop import Trainer
    from cosmos.training.preemption import STOP
    from cosmos.training.pretrain import run_pretrain

    rank = os.environ.get("RANK", "0")
    attempts = Path(marker_dir) / f"attempts-rank{rank}"
    first = not attempts.exists()
    with attempts.open("a") as f:
        f.write(f"attempt in job {os.environ.get('SLURM_JOB_ID')}\n")
    step_on_device, started = Trainer.step_on_device, []

    def watched(self, batch):
        if not started:
            started.append(self.position.step)
            with (Path(marker_dir) / f"starts-rank{rank}").open("a") as f:
                f.write(f"started at step {self.position.step}\n")
        if first and self.position.step == stall_at:
            (Path(marker_dir) / f"stalled-rank{rank}").touch()
            deadline = time.monotonic() + 600
            while STOP.signum is None and time.monotonic() < deadline:  # preempted (USR2) long before the deadline
                time.sleep(0.1)
        return step_on_device(self, batch)

    Trainer.step_on_device = watched  # this process is the job's own; nothing else sees the patch
    return run_pretrain(**kwargs)


def fail_on_rank_one() -> None:
    """Rank 1 raises; rank 0 is busy (not in a collective, so nothing tells it), until the job ends it."""
    from cosmos.training.distributed import init_distributed

    world = init_distributed(torch.device("cpu"))
    if world.rank == 1:
        raise ValueError("rank 1 cannot go on")
    time.sleep(600)


def sleep(seconds: float) -> None:
    time.sleep(seconds)
