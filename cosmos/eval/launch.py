"""Where an evaluation stage evaluates: in its own process (``launcher=local``) or as a one-task submitit job.

The eval stages follow the pipeline's ``launcher`` section, so ``-S launcher=slurm`` moves evaluation to the
cluster together with training and a cluster pipeline never evaluates on the submitting node. Evaluation is
not distributed, so the job's shape is derived, not copied: one node, one task, and one GPU when the
launcher asks for GPUs at all (``min(launcher.gpus_per_node, 1)``). ``eval.launcher`` overrides the
``launcher`` keys it sets for evaluation only, e.g. a shorter ``timeout_min`` or another
``partition``; a null value keeps ``launcher``'s, and ``name: local`` keeps evaluation in-process while
training runs as jobs.

Submission, waiting, Ctrl-C and log tails are :mod:`cosmos.training.launch`'s (``submit`` / ``wait``). The job
runs in the stage's working directory (passed as an absolute path, as queued experiments run in
``.dvc/tmp/exps`` copies), checks that it got the GPU it asked for, and evaluates in full fp32
(:func:`cosmos.eval.device.full_fp32`). What it returns travels back pickled; the stage writes its outputs
only after the job succeeded.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cosmos.eval.device import DEVICE_CHOICES, full_fp32

__all__ = ["EvalLaunchError", "eval_launcher", "run_evaluation"]

# Keys of the job's shape: evaluation runs in one task and never spans nodes.
_ONE_TASK = {"nodes": 1, "tasks_per_node": 1}


class EvalLaunchError(RuntimeError):
    """The evaluation job could not be submitted or failed; the message names the stage, the job and the fix."""


def eval_launcher(launcher: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None, job_name: str):
    """The :class:`~cosmos.training.config.LauncherConfig` of an evaluation job, or ``None`` for in-process.

    Args:
        launcher: the ``launcher`` params section (``None``: in-process, for callers without one).
        overrides: ``eval.launcher``: keys of ``launcher`` to replace for evaluation only (null: keep).
        job_name: the Slurm job name (``squeue --name``), unless ``sbatch_extra`` sets one.
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    merged = {**(launcher or {}), **overrides}
    if merged.get("name", "local") == "local":
        return None
    from cosmos.training.config import LauncherConfig, typed_section

    base = typed_section(LauncherConfig, launcher, "launcher")
    shape = {**_ONE_TASK, "gpus_per_node": min(base.gpus_per_node, 1)}
    for key, value in _ONE_TASK.items():
        if overrides.get(key, value) != value:
            raise ValueError(f"eval.launcher.{key}={overrides[key]!r}: evaluation runs in one task on one node; "
                             f"remove the key (the eval job's {key} is always {value})")
    cfg = typed_section(LauncherConfig, {**dataclasses.asdict(base), **shape, **overrides}, "eval.launcher")
    if cfg.gpus_per_node not in (0, 1):
        raise ValueError(f"eval.launcher.gpus_per_node={cfg.gpus_per_node}: evaluation uses at most one GPU; "
                         "set 0 or 1")
    extra = dict(cfg.sbatch_extra)
    if not {"job_name", "job-name", "J"} & set(extra):
        extra["job_name"] = job_name
    return dataclasses.replace(cfg, sbatch_extra=extra)


def run_evaluation(fn: Callable[..., Any], kwargs: dict[str, Any], launcher, log_dir: str | Path, *,
                   device: str, stage: str) -> Any:
    """``fn(**kwargs)`` in this process (``launcher is None``) or in a job (:func:`eval_launcher`); its result.

    Args:
        fn, kwargs: a module-level function (picklable by name) and its keyword arguments; paths in them may
            be relative to the stage's working directory, which the job also runs in.
        launcher: from :func:`eval_launcher`.
        log_dir: the job's submitit folder (``<log_dir>/<job id>/``); must lie outside every DVC out.
        device: ``eval.device``, checked against the job's GPU request before anything is queued.
        stage: the DVC stage name, for messages.
    """
    if launcher is None:
        with full_fp32():
            return fn(**kwargs)
    from cosmos.training.launch import LaunchError, submit, wait

    _check_device_request(device, launcher)
    job_kwargs = {"fn": fn, "kwargs": kwargs, "workdir": str(Path.cwd().resolve()),
                  "gpus": launcher.gpus_per_node if launcher.name == "slurm" else 0}
    try:
        job = submit(_evaluate_in_job, job_kwargs, launcher, log_dir)
        return wait(job, log_dir)
    except LaunchError as err:
        # launch's messages speak of training; this job evaluates
        raise EvalLaunchError(f"{stage}: {str(err).replace('training job', 'evaluation job', 1)}") from err


def _check_device_request(device: str, launcher) -> None:
    """Refuse, before queueing, a device setting the job's GPU request contradicts (Slurm jobs only: a
    ``submitit_local`` job sees this machine's devices)."""
    if device not in DEVICE_CHOICES:
        raise ValueError(f"eval.device={device!r} must be one of {list(DEVICE_CHOICES)} (auto: CUDA when available)")
    if launcher.name != "slurm":
        return
    if device == "cuda" and launcher.gpus_per_node == 0:
        raise ValueError("eval.device=cuda but the evaluation job asks for no GPU (launcher.gpus_per_node=0, or "
                         "eval.launcher.gpus_per_node=0). Fix: set eval.launcher.gpus_per_node=1, or eval.device=auto")
    if device == "cpu" and launcher.gpus_per_node > 0:
        raise ValueError(f"eval.device=cpu but the evaluation job would hold a GPU it does not use "
                         f"(launcher.gpus_per_node={launcher.gpus_per_node}). Fix: set eval.launcher.gpus_per_node=0 "
                         f"to evaluate on CPUs, or eval.device=auto")


def _evaluate_in_job(fn: Callable[..., Any], kwargs: dict[str, Any], workdir: str, gpus: int) -> Any:
    """The job's body: the stage's working directory, the GPU it asked for, fp32, then ``fn(**kwargs)``."""
    import torch

    os.chdir(workdir)
    if gpus > 0 and not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
        raise RuntimeError(f"the evaluation job asked for {gpus} GPU but {socket.gethostname()} shows none "
                           f"(CUDA_VISIBLE_DEVICES={visible}, torch {torch.__version__}, CUDA build "
                           f"{torch.version.cuda}); set eval.launcher.gpus_per_node=0 to evaluate on CPUs, or "
                           f"launcher.partition to a GPU partition")
    with full_fp32():
        return fn(**kwargs)
