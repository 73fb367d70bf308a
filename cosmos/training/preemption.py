"""Preemption at a step boundary: the requeue signal buys a checkpoint of the step in progress.

Slurm tells a job it is about to be preempted or run out of time by signalling every task of it
(``USR2`` for submitit jobs: ``--signal=USR2@90``, or ``scancel --signal``). submitit's own handler
checkpoints and requeues at once, in the middle of whatever the task was doing, so a training job could
only resume from its last periodic checkpoint and lost up to ``train.checkpoint_every`` steps.

:data:`STOP` replaces that handler inside a training task (:meth:`StopRequest.install`, called by the
launcher's task):

1. the signal only records itself (any rank, any moment: mid-step, mid-collective, mid-save);
2. at the next step boundary :meth:`StopRequest.requested` is true on every rank at once: the ranks agree
   with one ``max`` all-reduce of a CPU flag over a gloo group, so no rank stops a step earlier than its
   peers and none waits alone in a collective;
3. the trainer writes the checkpoint of that step (rank 0, atomically: temp file, fsync, rename) and returns;
4. the task hands the signal to submitit's handler (:meth:`StopRequest.hand_over`): rank 0 requeues the job,
   every other rank waits to be ended by the requeue. The requeued job resumes from that checkpoint exactly.

DataLoader workers are forked from the trainer and would inherit the handlers, so
:func:`ignore_job_signals` (their ``worker_init_fn``) makes them ignore the job signals: only the trainer
process answers a preemption.

Without :meth:`install` (``launcher=local``, ``torchrun``, or a job function not marked with
:func:`stops_at_step_boundary`) :meth:`requested` is false at no cost.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["JOB_SIGNALS", "STOP", "StopRequest", "ignore_job_signals", "stops_at_step_boundary"]

# USR2: submitit's preemption / time-out signal (SUBMITIT_PREEMPT_SIGNAL may name another); TERM: what Slurm
# sends every process of a step before it kills it.
JOB_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)


class StopRequest:
    """A process-wide record of the requeue signal, turned into one agreed stop at a step boundary."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.installed = False
        self._installed_signum: int | None = None
        self._previous: Any = None
        self._group: Any = None

    def install(self, signum: int | None = None) -> None:
        """Record ``signum`` (submitit's preemption signal by default) instead of acting on it at once."""
        signum = signum if signum is not None else _submitit_signal()
        self._previous = signal.getsignal(signum)
        signal.signal(signum, self._record)
        self.installed, self._installed_signum = True, signum

    def _record(self, signum: int, frame: Any = None) -> None:
        del frame
        if self.signum is None:
            print(f"preemption: caught {signal.Signals(signum).name}; the checkpoint of the step in progress is "
                  "written at its end, then the job is requeued", file=sys.stderr, flush=True)
        self.signum = signum

    def requested(self, world_size: int = 1) -> bool:
        """Whether to stop at this step boundary; with ``world_size > 1`` a collective that every rank calls."""
        if not self.installed:
            return False
        if world_size == 1:
            return self.signum is not None
        import torch.distributed as dist

        if self._group is None:  # a CPU group: the flag never waits on, or syncs, a CUDA stream
            self._group = dist.new_group(backend="gloo")
        flag = torch.tensor([0 if self.signum is None else 1], dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
        stop = bool(flag.item())
        if stop and self.signum is None:  # a peer was signalled first: act on its signal
            self.signum = int(self._installed_signum)
        return stop

    def hand_over(self, rank: int, wait_s: float = 600.0) -> None:
        """After the stop checkpoint: let submitit's handler requeue (rank 0); other ranks wait to be ended.

        Rank 0 leaves through the handler's ``sys.exit`` once the job is requeued (or raises when submitit
        refuses to requeue, which ends the job, and with it the other ranks, through ``--kill-on-bad-exit``).
        A rank that exited by itself first could make ``srun`` end rank 0 before it requeued.
        """
        previous = self._previous
        if rank == 0:
            if not callable(previous):
                raise SystemExit(f"preempted (signal {self.signum}) with no requeue handler to hand over to")
            previous(self.signum, None)  # submitit's: requeues, then sys.exit
            raise SystemExit(f"preempted (signal {self.signum}): the requeue handler returned without ending the task")
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            time.sleep(1.0)
        raise SystemExit(f"rank {rank}: preempted, but the job was not requeued within {wait_s:.0f} s")

    def reset(self) -> None:
        """Forget the signal and restore the previous handler (tests, or a task that trains twice)."""
        if self.installed and self._previous is not None:
            signal.signal(self._installed_signum, self._previous)
        self.__init__()


def _submitit_signal() -> signal.Signals:
    try:
        from submitit.core.job_environment import JobEnvironment

        return JobEnvironment._usr_sig()
    except Exception:  # noqa: BLE001 - submitit absent or a plugin without it: Slurm's usual choice
        return signal.SIGUSR2


def ignore_job_signals(worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: a worker ignores the job signals; the trainer answers them alone."""
    del worker_id
    for signum in JOB_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def stops_at_step_boundary(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a job function that asks :data:`STOP` at its step boundaries and returns ``{"preempted": True, ...}``
    when it stopped there; the launcher's task installs :data:`STOP` only for such functions. Any other
    function (an evaluation, a test job) keeps submitit's own handler: checkpoint and requeue at once."""
    fn.stops_at_step_boundary = True  # type: ignore[attr-defined]
    return fn


STOP = StopRequest()
