"""Training jobs submitted ahead of `dvc repro`, and how a training stage collects its own.

Why: DVC runs stages one after another, and a training stage with ``launcher=slurm`` blocks on its job, so a
grid of N variants costs the sum of N jobs. :mod:`cosmos.ablation.parallel` submits every changed variant's
job at once and writes a record beside it; then, inside ``dvc repro``, each training stage finds its record
and waits on that job instead of submitting another (:func:`train_or_collect`). The waits overlap, so the
grid costs about its longest job, while DVC still runs, checks and caches every stage exactly as before.

The record is ``runs/ablation/<run>/submitit/ahead.json``: the job id, its task count and a digest of exactly
what the job was submitted with (:func:`inputs_digest`: the keyword arguments of
:func:`cosmos.training.pretrain.run_pretrain`, which hold the variant's whole params and its absolute
paths, plus the size and mtime of every file the stage depends on in dvc.yaml, i.e. the code and data the
job imports and reads). The folder is not a DVC output (only ``checkpoints/`` is, and it is
``persist: true``), so DVC never deletes the record or the running job's files before the stage runs.

A record is used once: the stage that collects it deletes it, whether the job succeeded, failed or was
interrupted, so a failed job is reported once and the next run submits anew. A record whose digest differs
from the stage's inputs (params, code or data changed since submission) is stale: the stage cancels that
job, so it stops writing into the checkpoint folder, and submits anew, as a plain ``dvc repro`` would.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from cosmos.io.atomic import atomic_write_json
from cosmos.training.launch import sigint_ignored

RECORD_NAME = "ahead.json"
# Slurm states of a job that may still deliver its result (sacct -X); COMPLETED has delivered it.
ALIVE = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
                   "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING"})
REUSABLE = ALIVE | {"COMPLETED"}


def training_stage(variant: str, seed: int | None = None) -> tuple[str, str]:
    """(DVC stage name, dvc.yaml stage kind) that trains ``variant`` at the top-level seed or extra ``seed``."""
    if seed is None:
        return f"ablation_train@{variant}", "ablation_train"
    return f"ablation_seed_train@{variant}-{seed}", "ablation_seed_train"


def training_stages(params: dict[str, Any]) -> dict[str, tuple[str, int | None]]:
    """Every training stage of the grid, in dvc.yaml order: stage name -> (variant, extra seed or None)."""
    from cosmos.ablation.grid import extra_seed_runs, variant_names

    stages = {training_stage(v)[0]: (v, None) for v in variant_names(params)}
    stages.update({training_stage(v, s)[0]: (v, s) for v, s in extra_seed_runs(params)})
    return stages


@dataclass(frozen=True)
class JobRecord:
    """A job submitted ahead for one training stage: what the stage needs to find and trust it."""

    stage: str  # the DVC stage, e.g. ablation_train@clip or ablation_seed_train@clip-1
    job_id: str
    tasks: int  # nodes x tasks_per_node: submitit reads one result file per task
    digest: str  # inputs_digest() of what the job was submitted with


def record_path(log_dir: str | Path) -> Path:
    return Path(log_dir) / RECORD_NAME


def write_record(log_dir: str | Path, record: JobRecord) -> Path:
    path = record_path(log_dir)
    atomic_write_json(path, asdict(record))
    return path


def read_record(log_dir: str | Path) -> JobRecord | None:
    """The record in ``log_dir``, or None when there is none; an unreadable one is reported and ignored (the
    stage then submits anew, which is always correct, only slower)."""
    path = record_path(log_dir)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return JobRecord(stage=str(data["stage"]), job_id=str(data["job_id"]), tasks=int(data["tasks"]),
                         digest=str(data["digest"]))
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"ignoring unreadable job record {path}: {type(err).__name__}: {err}", flush=True)
        return None


def drop_record(log_dir: str | Path) -> None:
    record_path(log_dir).unlink(missing_ok=True)


def stage_deps(stage_kind: str, data_root: str, dvc_yaml: str | Path = "dvc.yaml") -> list[Path]:
    """The paths stage ``stage_kind`` (``ablation_train`` or ``ablation_seed_train``) depends on in dvc.yaml,
    with ``${data.root}`` resolved; relative to the repository root, where DVC runs stages."""
    stages = yaml.safe_load(Path(dvc_yaml).read_text(encoding="utf-8"))["stages"]
    if stage_kind not in stages:
        raise ValueError(f"{dvc_yaml} has no stage {stage_kind!r} (stages: {sorted(stages)})")
    deps = []
    for dep in stages[stage_kind].get("deps") or []:
        path = str(dep).replace("${data.root}", str(data_root))
        if "${" in path:
            raise ValueError(f"{dvc_yaml}: {stage_kind} dependency {dep!r} uses a template that "
                             "cosmos.ablation.ahead.stage_deps does not resolve; add it there")
        deps.append(Path(path))
    return deps


def deps_state(paths: Iterable[str | Path]) -> list[list[Any]]:
    """``[path, size, mtime_ns]`` of every file under ``paths`` (missing paths as ``[path, None, None]``).

    Sizes and mtimes, not contents: cheap on a real data set, and any rewrite counts as a change (a false
    change only costs a resubmission). Byte-code caches are left out: the job writes them when it imports.
    """
    rows: list[list[Any]] = []
    for root in map(Path, paths):
        if not root.exists():
            rows.append([root.as_posix(), None, None])
            continue
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            if "__pycache__" in f.parts or f.suffix == ".pyc":
                continue
            st = f.stat()
            rows.append([f.as_posix(), st.st_size, st.st_mtime_ns])
    return rows


def inputs_digest(kwargs: dict[str, Any], deps: list[list[Any]]) -> str:
    """sha256 of the job's keyword arguments and its dependencies' state, in canonical JSON."""
    text = json.dumps({"kwargs": kwargs, "deps": deps}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stage_digest(kwargs: dict[str, Any], stage_kind: str, data_root: str) -> str:
    """The digest a record must carry for ``kwargs`` of a ``stage_kind`` stage, computed from the current tree."""
    return inputs_digest(kwargs, deps_state(stage_deps(stage_kind, data_root)))


def decide(record: JobRecord | None, digest: str, state: str | None = None) -> str:
    """What to do with a record, given the digest of the current inputs and (when known) the job's state.

    - ``"none"``: no record; submit (the orchestrator) or launch as usual (the stage);
    - ``"stale"``: the record was made for other inputs; cancel its job and submit anew;
    - ``"dead"``: same inputs, but Slurm says the job ended without success (failed, cancelled, timed out,
      unknown to accounting); only the orchestrator asks, and it submits anew;
    - ``"use"``: same inputs and a job that is queued, running or completed; wait on it.
    """
    if record is None:
        return "none"
    if record.digest != digest:
        return "stale"
    if state is not None and state not in REUSABLE:
        return "dead"
    return "use"


def slurm_state(job_id: str) -> str:
    """The job's state from accounting (``sacct -X``, its latest run), first word only; ``UNKNOWN`` when
    accounting has no record or cannot be asked."""
    try:
        out = subprocess.run(["sacct", "-X", "--noheader", "--parsable2", f"--jobs={job_id}", "--format=State"],
                             capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return "UNKNOWN"
    lines = [ln.split()[0] for ln in out.splitlines() if ln.strip()]
    return lines[-1] if lines else "UNKNOWN"


def cancel_jobs(job_ids: Iterable[str]) -> None:
    """``scancel`` the jobs, with Ctrl-C ignored meanwhile (a second Ctrl-C must not kill scancel half-way);
    jobs that already ended are no error."""
    ids = [str(j) for j in job_ids]
    if not ids:
        return
    with sigint_ignored():
        subprocess.run(["scancel", *ids], capture_output=True, text=True, timeout=120)


def slurm_job(log_dir: str | Path, record: JobRecord) -> Any:
    """The submitit handle of a recorded job (its logs and result files in ``log_dir/<job id>/``)."""
    import submitit

    return submitit.SlurmJob(folder=str(Path(log_dir).resolve() / "%j"), job_id=record.job_id,
                             tasks=tuple(range(record.tasks)))


def submit_ahead(params: dict[str, Any], out: str | Path, shard_dir: str | Path, stage: str,
                 stage_kind: str) -> JobRecord:
    """Submit the training job of one stage now, exactly as the stage would, and record it beside its logs."""
    from cosmos.training.launch import submit
    from cosmos.training.pretrain import parse_sections, pretrain_job, run_pretrain

    kwargs = pretrain_job(params, out, shard_dir)
    launcher = parse_sections(params)["launcher"]
    _require_slurm(launcher.name, stage)
    digest = stage_digest(kwargs, stage_kind, params["data"]["root"])
    log_dir = Path(out) / "submitit"
    job = submit(run_pretrain, kwargs, launcher, log_dir)
    record = JobRecord(stage=stage, job_id=str(job.job_id), tasks=launcher.nodes * launcher.tasks_per_node,
                       digest=digest)
    write_record(log_dir, record)
    return record


def train_or_collect(params: dict[str, Any], out: str | Path, shard_dir: str | Path, stage: str,
                     stage_kind: str, launch: Callable[..., dict[str, Any]] | None = None) -> dict[str, Any]:
    """What a training stage runs: wait on the job submitted ahead for exactly these inputs, if there is one;
    otherwise train as usual (``launch``, default :func:`cosmos.training.pretrain.launch_pretrain`).

    Either way the summary is checked to have reached the last step, so partial outputs are never recorded.
    A failed job raises :class:`cosmos.training.launch.LaunchError` naming the job and its log folder (the
    stage frame prefixes the stage, i.e. the variant); Ctrl-C cancels the job (:func:`cosmos.training.launch.wait`).
    """
    from cosmos.training.launch import wait
    from cosmos.training.pretrain import check_finished, launch_pretrain, parse_sections, pretrain_job

    launch = launch or launch_pretrain
    log_dir = Path(out) / "submitit"
    record = read_record(log_dir) if parse_sections(params)["launcher"].name == "slurm" else None
    if record is None:
        return launch(params, out, shard_dir)
    digest = stage_digest(pretrain_job(params, out, shard_dir), stage_kind, params["data"]["root"])
    if decide(record, digest) == "stale":
        print(f"{stage}: job {record.job_id} was submitted ahead with other inputs (params, code or data changed "
              "since); cancelling it and training anew", flush=True)
        cancel_jobs([record.job_id])
        drop_record(log_dir)
        return launch(params, out, shard_dir)
    print(f"{stage}: collecting slurm job {record.job_id}, submitted ahead; logs in "
          f"{Path(log_dir).resolve() / record.job_id}", flush=True)
    try:
        summary = wait(slurm_job(log_dir, record), log_dir)
    finally:  # used once: a failure is reported once, and the next run submits anew
        drop_record(log_dir)
    return check_finished(summary)


def _require_slurm(name: str, stage: str) -> None:
    if name != "slurm":
        raise ValueError(f"{stage}: launcher.name={name!r}; only launcher=slurm jobs can be submitted ahead (they "
                         "outlive this process and are found again by id). Use plain `dvc repro` for "
                         f"launcher={name}, or set launcher=slurm")

