"""Run the training function in-process (``launcher=local``) or as a blocking submitit job.

A DVC stage must not finish before its job does: the stage submits, blocks on ``job.results()`` and
raises if any task failed, so DVC caches outputs only after success (pipeline-stack 4.4). Output paths
must be absolute, because queued experiments run in ``.dvc/tmp/exps`` copies. Multi-task jobs export the
torch.distributed variables with submitit's ``TorchDistributedEnvironment`` before calling the function.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cosmos.training.config import LauncherConfig

__all__ = ["LaunchError", "executor_parameters", "launch"]


class LaunchError(RuntimeError):
    """The submitted job failed; the message carries the job id and its error."""


class _Task:
    """The picklable callable a submitit job runs; requeued from its own checkpoints on preemption."""

    def __init__(self, fn: Callable[..., Any], kwargs: dict[str, Any], distributed: bool):
        self.fn, self.kwargs, self.distributed = fn, kwargs, distributed

    def __call__(self) -> Any:
        if self.distributed:
            import submitit

            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        return self.fn(**self.kwargs)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(_Task(self.fn, self.kwargs, self.distributed))


def launch(fn: Callable[..., Any], kwargs: dict[str, Any], launcher: LauncherConfig, log_dir: str | Path) -> Any:
    """``fn(**kwargs)`` here (``local``) or in a submitit job (``submitit_local``, ``slurm``); rank 0's result."""
    if launcher.name == "local":
        return fn(**kwargs)
    import submitit

    cluster = "local" if launcher.name == "submitit_local" else "slurm"
    executor = submitit.AutoExecutor(folder=str(Path(log_dir).resolve() / "%j"), cluster=cluster)
    executor.update_parameters(**executor_parameters(launcher, cluster))
    world = launcher.nodes * launcher.tasks_per_node
    job = executor.submit(_Task(fn, kwargs, distributed=world > 1))
    print(f"submitted {cluster} job {job.job_id}; logs in {Path(log_dir).resolve() / str(job.job_id)}", flush=True)
    try:
        return job.results()[0]
    except Exception as err:  # submitit.core.utils.FailedJobError and friends
        logs = Path(log_dir).resolve() / str(job.job_id)
        raise LaunchError(f"training job {job.job_id} failed: {_error_line(str(err))} (logs: {logs})"
                          f"{_log_tail(job)}") from err


def executor_parameters(launcher: LauncherConfig, cluster: str) -> dict[str, Any]:
    """submitit parameters from the `launcher` section; Slurm-only keys are passed only to Slurm."""
    params: dict[str, Any] = dict(name="cosmos-pretrain", timeout_min=launcher.timeout_min, nodes=launcher.nodes,
                                  tasks_per_node=launcher.tasks_per_node, cpus_per_task=launcher.cpus_per_task)
    if cluster == "slurm":
        params.update(gpus_per_node=launcher.gpus_per_node)
        for key in ("partition", "account", "qos", "constraint"):
            if getattr(launcher, key):
                params[f"slurm_{key}"] = getattr(launcher, key)
        if launcher.sbatch_extra:
            params["slurm_additional_parameters"] = dict(launcher.sbatch_extra)
    return params


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
