"""Run the training function in-process (``launcher=local``) or as a blocking submitit job.

A DVC stage must not finish before its job does: the stage submits, blocks on ``job.results()`` and
raises if any task failed, so DVC caches outputs only after success (pipeline-stack 4.4). Output paths
must be absolute, because queued experiments run in ``.dvc/tmp/exps`` copies. Multi-task jobs export the
torch.distributed variables from the job's environment (:func:`cosmos.training.distributed.export_job_world`)
before calling the function.

On Slurm, a request the cluster cannot serve fails at submission, never by waiting in the queue: GPUs
asked of a partition whose nodes have none (checked with ``sinfo``), or anything ``sbatch`` refuses.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cosmos.training.config import LauncherConfig

__all__ = ["LaunchError", "check_slurm_gpus", "executor_parameters", "launch", "sigint_ignored", "submit", "wait"]


class LaunchError(RuntimeError):
    """The job could not be submitted or failed; the message carries the job id, its error and the fix."""


class _Task:
    """The picklable callable a submitit job runs; requeued from its own checkpoints on preemption.

    On the requeue signal a training function (marked with :func:`~cosmos.training.preemption.stops_at_step_boundary`,
    as :func:`cosmos.training.pretrain.run_pretrain` is) checkpoints the step in progress and returns; the task
    then hands the signal to submitit, which requeues (:mod:`cosmos.training.preemption`). Any other function
    meets the signal through submitit's handler only after it returns, or at once if it never asks.
    """

    def __init__(self, fn: Callable[..., Any], kwargs: dict[str, Any], distributed: bool):
        self.fn, self.kwargs, self.distributed = fn, kwargs, distributed

    def __call__(self) -> Any:
        from cosmos.training.preemption import STOP

        _threads_from_allocation()
        rank = 0
        if self.distributed:
            from cosmos.training.distributed import export_job_world

            rank = export_job_world().rank
        if getattr(self.fn, "stops_at_step_boundary", False):
            STOP.install()  # the requeue signal now waits for the step boundary (cosmos.training.preemption)
        result = self.fn(**self.kwargs)
        if isinstance(result, dict) and result.get("preempted"):
            STOP.hand_over(rank)  # rank 0 requeues and exits; the others wait for the requeue to end them
        return result

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(_Task(self.fn, self.kwargs, self.distributed))


def _threads_from_allocation() -> None:
    """One torch thread per CPU Slurm gave the task (``--cpus-per-task``), unless ``OMP_NUM_THREADS`` says.

    Without a CPU-binding task plugin torch would start one thread per core of the node in every task, and
    the tasks of a job would fight over the cores.
    """
    cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if cpus.isdigit() and int(cpus) > 0 and "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(int(cpus))


def launch(fn: Callable[..., Any], kwargs: dict[str, Any], launcher: LauncherConfig, log_dir: str | Path) -> Any:
    """``fn(**kwargs)`` here (``local``) or in a submitit job (``submitit_local``, ``slurm``); rank 0's result."""
    if launcher.name == "local":
        return fn(**kwargs)
    return wait(submit(fn, kwargs, launcher, log_dir), log_dir)


def submit(fn: Callable[..., Any], kwargs: dict[str, Any], launcher: LauncherConfig, log_dir: str | Path) -> Any:
    """Submit ``fn(**kwargs)`` as a submitit job (logs in ``log_dir/<job id>/``) and return the job at once."""
    import submitit

    if launcher.name not in ("submitit_local", "slurm"):
        raise ValueError(f"launcher.name={launcher.name!r} does not submit jobs (use submitit_local or slurm)")
    cluster = "local" if launcher.name == "submitit_local" else "slurm"
    if cluster == "slurm":
        check_slurm_gpus(launcher)
    executor = submitit.AutoExecutor(folder=str(Path(log_dir).resolve() / "%j"), cluster=cluster)
    executor.update_parameters(**executor_parameters(launcher, cluster))
    world = launcher.nodes * launcher.tasks_per_node
    try:
        job = executor.submit(_Task(fn, kwargs, distributed=world > 1))
    except submitit.core.utils.FailedJobError as err:  # sbatch refused the job script
        reason = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
        raise LaunchError(f"{cluster} refused the job: {reason} (launcher: {_describe(launcher)})") from err
    print(f"submitted {cluster} job {job.job_id}; logs in {Path(log_dir).resolve() / str(job.job_id)}", flush=True)
    return job


def wait(job: Any, log_dir: str | Path) -> Any:
    """Block until ``job`` is done; rank 0's result, or :class:`LaunchError` with the job's log tail.

    Interrupted (Ctrl-C on ``dvc repro``), it cancels the job: a job left running would go on writing the
    stage's outputs behind DVC's back, and race the next run over the same checkpoint folder. The cancel
    never asks submitit's cached state (which may still read PENDING); it runs ``scancel`` with further
    Ctrl-Cs ignored, so a user pressing it again cannot kill ``scancel`` half-way.
    """
    try:
        return job.results()[0]
    except KeyboardInterrupt:
        with sigint_ignored():
            job.cancel(check=False)
        print(f"interrupted: cancelled job {job.job_id}", file=sys.stderr, flush=True)
        raise
    except Exception as err:  # submitit.core.utils.FailedJobError and friends
        logs = Path(log_dir).resolve() / str(job.job_id)
        raise LaunchError(f"training job {job.job_id} failed: {_error_line(_first_task_error(job) or str(err))} "
                          f"(logs: {logs}){_log_tail(job)}") from err


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """SIGINT ignored in this process and in the children it starts (an ignored signal survives exec)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def executor_parameters(launcher: LauncherConfig, cluster: str) -> dict[str, Any]:
    """submitit parameters from the `launcher` section; Slurm-only keys are passed only to Slurm.

    ``gpus_per_node=0`` sends no GPU request at all (clusters without GRES reject even ``--gpus-per-node=0``
    on some set-ups). ``srun --kill-on-bad-exit`` ends every task when one fails, so a rank that raises
    does not leave the others waiting in a collective until the job's time limit.
    """
    params: dict[str, Any] = dict(name="cosmos-pretrain", timeout_min=launcher.timeout_min, nodes=launcher.nodes,
                                  tasks_per_node=launcher.tasks_per_node, cpus_per_task=launcher.cpus_per_task)
    if cluster == "slurm":
        if launcher.gpus_per_node > 0:
            params.update(gpus_per_node=launcher.gpus_per_node)
        params["slurm_srun_args"] = ["--kill-on-bad-exit=1"]
        for key in ("partition", "account", "qos", "constraint"):
            if getattr(launcher, key):
                params[f"slurm_{key}"] = getattr(launcher, key)
        if launcher.sbatch_extra:
            params["slurm_additional_parameters"] = dict(launcher.sbatch_extra)
    return params


def check_slurm_gpus(launcher: LauncherConfig, sinfo: Callable[[list[str]], str] | None = None) -> None:
    """Raise :class:`LaunchError` when ``launcher.gpus_per_node`` cannot be served, before anything is queued.

    One task per GPU: ``tasks_per_node`` must equal ``gpus_per_node``. The partition (the cluster default
    when ``launcher.partition`` is empty) must have a node with at least ``gpus_per_node`` GPUs in its
    ``sinfo`` GRES. When ``sinfo`` is missing or lists no node, ``sbatch`` has the last word.
    """
    gpus = launcher.gpus_per_node
    if gpus <= 0:
        return
    if launcher.tasks_per_node != gpus:
        raise LaunchError(f"launcher.tasks_per_node={launcher.tasks_per_node} must equal launcher.gpus_per_node="
                          f"{gpus}: training runs one task per GPU")
    cmd = ["sinfo", "--noheader", "--Node", "--format=%N|%G|%P"]
    if launcher.partition:
        cmd.append(f"--partition={launcher.partition}")
    try:
        text = (sinfo or _run)(cmd)
    except (OSError, subprocess.CalledProcessError):
        return
    rows = [line.split("|") for line in text.splitlines() if line.count("|") == 2]
    if launcher.partition:
        rows = [r for r in rows if r[2].rstrip("*") == launcher.partition]
    else:
        rows = [r for r in rows if r[2].endswith("*")] or rows  # `*` marks the default partition
    if not rows:
        return
    most = max(_gpu_count(gres) for _, gres, _ in rows)
    if most < gpus:
        default = rows[0][2].rstrip("*")
        where = f"partition {launcher.partition!r}" if launcher.partition else f"the default partition {default!r}"
        found = ", ".join(sorted({f"{node}: {gres}" for node, gres, _ in rows}))
        raise LaunchError(f"launcher.gpus_per_node={gpus} but no node of {where} has {gpus} GPU(s) (sinfo GRES: "
                          f"{found}); set launcher.gpus_per_node=0 to train on CPUs, or launcher.partition to a "
                          f"GPU partition")


def _run(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout


def _gpu_count(gres: str) -> int:
    """GPUs in one node's ``sinfo %G`` field, e.g. ``gpu:a100:4(S:0-1),shard:8`` -> 4; ``(null)`` -> 0."""
    counts = [int(m.group(1)) for m in re.finditer(r"(?:^|,)gpu(?::[^:,(]+)?:(\d+)", gres)]
    return max(counts, default=0)


def _describe(launcher: LauncherConfig) -> str:
    keys = ("partition", "account", "qos", "constraint", "nodes", "tasks_per_node", "gpus_per_node", "cpus_per_task")
    return ", ".join(f"{k}={getattr(launcher, k)!r}" for k in keys if getattr(launcher, k) not in ("", None))


def _first_task_error(job: Any) -> str | None:
    """The trace of the task that raised first: the cause, where the other ranks only lost their peer."""
    failed = []
    for task in getattr(job, "_sub_jobs", None) or [job]:
        try:
            if task.paths.result_pickle.exists():
                exc = task.exception()
                if exc is not None:
                    failed.append((task.paths.result_pickle.stat().st_mtime, str(exc)))
        except Exception:  # an unreadable result says nothing more than the error we already have
            continue
    return min(failed)[1] if failed else None


def _log_tail(job: Any, lines: int = 12) -> str:
    """The last ``lines`` lines of the job's stderr (every task's), as extra lines after the one-line cause."""
    try:
        text = job.stderr() or ""
    except OSError:
        return ""
    tail = [ln for ln in text.splitlines() if ln.strip()][-lines:]
    return "\n--- job log tail ---\n" + "\n".join(tail) if tail else ""


def _error_line(trace: str) -> str:
    """The exception line of a submitit failure trace (its last unindented ``Type: message`` line)."""
    lines = [ln for ln in trace.splitlines() if ln and not ln.startswith((" ", "-", "Traceback", "You can check"))]
    errors = [ln for ln in lines if ":" in ln and not ln.startswith("Job (task=")]
    return errors[-1] if errors else (lines[0] if lines else trace)
