"""Jobs through the real ``sbatch`` of the local cluster (the ``slurm`` fixture brings it up).

- a 2-task job forms one gloo world: ranks 0 and 1, the node as ``MASTER_ADDR``, one port, one torch
  thread per allocated CPU, the submitting folder as working directory;
- a rank that raises ends the whole job (the others do not wait in a collective) and its error is reported;
- Ctrl-C on the waiting stage cancels its job;
- GPUs asked of a node without GPUs fail at once with a clear message, and nothing is queued;
- a 2-task training job with 2 DataLoader workers per rank, preempted mid-step (SIGTERM + USR2, as Slurm
  preemption does) with ``checkpoint_every`` far above that step, finishes the step, writes its checkpoint,
  is requeued through ``_Task.checkpoint`` once (by rank 0; no worker and no other rank answers the signal),
  resumes at that very step (both ranks' second attempt starts at step 5, where the periodic checkpoints
  alone would have restarted from the epoch end at step 3) and ends on exactly the weights of an
  uninterrupted 2-task job with the same workers.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from cosmos.config.compose import compose_params
from cosmos.training.launch import LaunchError, launch, submit, wait
from cosmos.training.pretrain import run_pretrain
from tests.slurm import jobs
from tests.training.checkpoint_tensors import checkpoint_tensors

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(600)]


def test_a_two_task_job_forms_one_gloo_world(slurm, job_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job = submit(jobs.report_world, {}, slurm.launcher(), tmp_path / "submitit")
    reports = sorted(wait(job, tmp_path / "submitit") and job.results(), key=lambda r: r["rank"])
    assert [(r["rank"], r["local_rank"], r["world_size"]) for r in reports] == [(0, 0, 2), (1, 1, 2)]
    assert {r["backend"] for r in reports} == {"gloo"} and {r["all_reduce_sum"] for r in reports} == {3.0}
    assert {(r["MASTER_ADDR"], r["MASTER_PORT"]) for r in reports} == {(slurm.node, reports[0]["MASTER_PORT"])}
    assert {r["LOCAL_WORLD_SIZE"] for r in reports} == {"2"} and {r["SLURM_JOB_ID"] for r in reports} == {job.job_id}
    assert {r["threads"] for r in reports} == {1}  # --cpus-per-task=1, not one thread per core of the node
    assert {r["cwd"] for r in reports} == {str(tmp_path)}
    info = slurm.job(job.job_id)
    assert info["State"] == "COMPLETED" and info["AllocCPUS"] == "2" and info["JobName"] == "cosmos-pretrain"


def test_a_rank_that_fails_ends_the_job_with_its_error(slurm, job_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job = submit(jobs.fail_on_rank_one, {}, slurm.launcher(), tmp_path / "submitit")
    with pytest.raises(LaunchError, match=rf"training job {job.job_id} failed: ValueError: rank 1 cannot go on"):
        wait(job, tmp_path / "submitit")
    assert slurm.job(job.job_id)["State"] == "FAILED"  # srun --kill-on-bad-exit ended rank 0's 10-minute sleep


_WAITING_STAGE = """
import faulthandler, signal, sys
from pathlib import Path
from cosmos.training.launch import submit, wait
from tests.slurm import jobs
from tests.slurm.conftest import Slurm
faulthandler.register(signal.SIGUSR1)  # the test asks for a stack dump if the stage does not stop
# A stage started from a terminal has Python's Ctrl-C handler; a process started in the background by a
# shell without job control (`pytest ... &`, some CI runners) inherits SIGINT ignored, and so would this one.
signal.signal(signal.SIGINT, signal.default_int_handler)
folder = Path(sys.argv[1])
wait(submit(jobs.sleep, {"seconds": 600}, Slurm.launcher(tasks_per_node=1), folder), folder)
"""


def test_ctrl_c_on_the_waiting_stage_cancels_its_job(slurm, job_env, tmp_path):
    """A real SIGINT to a stage process blocked on its job, sent again each second until the process ends (as
    a user presses Ctrl-C again): one may land where Python drops it, e.g. in a ``__del__``, whatever the
    state submitit last cached; the job ends CANCELLED and nothing is left running. The stage writes to a
    file, not a pipe: submitit's warnings on a busy cluster could fill a pipe nobody reads and block it."""
    log = tmp_path / "stage.log"
    with open(log, "w") as out:
        stage = subprocess.Popen([sys.executable, "-c", _WAITING_STAGE, str(tmp_path / "submitit")],
                                 cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        job_id = _poll(lambda: slurm.submitted_job_id(text) if "submitted slurm job" in (text := log.read_text())
                       else None, stage, 120, "the 'submitted slurm job' line", log)
        slurm.wait_for_state(job_id, {"RUNNING"})
        deadline = time.monotonic() + 120
        while stage.poll() is None:
            if time.monotonic() > deadline:
                masks = _signal_masks(stage.pid)
                stage.send_signal(signal.SIGUSR1)
                time.sleep(2)
                raise AssertionError(f"the waiting stage was still running 120 s after the first Ctrl-C ({masks}); "
                                     f"its output and stacks:\n{log.read_text()[-6000:]}")
            stage.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                stage.wait(timeout=1)
    finally:
        if stage.poll() is None:
            stage.kill()
            stage.wait()
    said = log.read_text()
    assert stage.returncode != 0 and f"interrupted: cancelled job {job_id}" in said, said[-6000:]
    assert slurm.job(job_id)["State"].startswith("CANCELLED")


def _signal_masks(pid: int) -> str:
    """The kernel's view of the process's signals (SigBlk / SigIgn / SigCgt; SIGINT is bit 1, 0x2)."""
    with contextlib.suppress(OSError):
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        return ", ".join(line.replace("\t", " ") for line in lines if line.startswith(("SigBlk", "SigIgn", "SigCgt")))
    return "no /proc status"


def _poll(value, proc, timeout_s: float, what: str, log: Path):
    """``value()`` once it is not None; fails naming ``what`` if ``proc`` ends or ``timeout_s`` passes first."""
    deadline = time.monotonic() + timeout_s
    while (got := value()) is None:
        assert proc.poll() is None, f"the stage ended (exit {proc.returncode}) before {what}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no {what} after {timeout_s} s:\n{log.read_text()}"
        time.sleep(0.2)
    return got


def test_gpus_asked_of_a_node_without_gpus_fail_before_anything_is_queued(slurm, tmp_path):
    before = slurm.job_ids()
    started = time.monotonic()
    with pytest.raises(LaunchError, match=r"launcher.gpus_per_node=2 but no node of the default partition "
                                          rf"'{slurm.partition}' has 2 GPU\(s\) \(sinfo GRES: {slurm.node}: \(null\)\);"
                                          r" set launcher.gpus_per_node=0 to train on CPUs"):
        launch(jobs.report_world, {}, slurm.launcher(gpus_per_node=2), tmp_path / "submitit")
    assert time.monotonic() - started < 30  # an answer, not a wait in the queue
    assert slurm.job_ids() == before and not (tmp_path / "submitit").exists()


def test_sbatch_refusals_are_reported_with_the_launcher_settings(slurm, tmp_path):
    refused = r"slurm refused the job: .*[Ii]nvalid partition.*\(launcher: partition='no-such-partition'"
    with pytest.raises(LaunchError, match=refused):
        launch(jobs.report_world, {}, slurm.launcher(partition="no-such-partition"), tmp_path / "submitit")


# 60 tiny samples (the session's tiny_shards), 16 per step over 2 ranks: 3 steps per epoch, 2 epochs.
_TRAIN = ["profile=debug", "train.batch_size=16", "train.data_fraction=1.0", "train.shuffle_buffer=16",
          "train.shuffle_initial=4", "optim.warmup_steps=1", "train.device=cpu", "train.precision=fp32",
          "train.epochs=2", "train.checkpoint_every=1", "launcher=slurm", "launcher.tasks_per_node=2",
          "launcher.cpus_per_task=1", "launcher.gpus_per_node=0", "launcher.timeout_min=10"]



def _wait_for(paths: list[Path], job, slurm, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(p.exists() for p in paths):
        assert not job.done(), f"job {job.job_id} ended before stalling:\n{job.stderr()}"
        assert time.monotonic() < deadline, f"no {[p.name for p in paths]} after {timeout_s} s"
        time.sleep(0.5)


def test_a_preempted_job_checkpoints_the_step_in_progress_and_resumes_there(slurm, job_env, tiny_shards, tmp_path,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = yaml.safe_load(compose_params([*_TRAIN, f"data.root={tiny_shards.parent}"]))
    launcher = slurm.launcher(timeout_min=60)  # submitit counts any signal in the last 10 minutes as a timeout
    common = dict(live_dir=str(tmp_path / "live"), shard_dir=str(tiny_shards))
    # 2 workers per rank (the worker count is part of the data order: shards are dealt to rank x worker slots).
    params["train"]["num_workers"] = 2
    reference = launch(run_pretrain, {**common, "params": params, "out_dir": str(tmp_path / "uninterrupted")},
                       launcher, tmp_path / "submitit")
    assert reference["finished"] and reference["steps"] == 6

    markers = tmp_path / "markers"
    markers.mkdir()
    # Periodic checkpoints only at epoch ends (step 3), far apart from the preemption.
    preempted = {**params, "train": {**params["train"], "checkpoint_every": 1000}}
    # Both ranks stall before step 5 (mid-epoch 2) until preempted, then finish that step.
    job = submit(jobs.pretrain_stalling_once, {"stall_at": 4, "marker_dir": str(markers), **common,
                                               "params": preempted, "out_dir": str(tmp_path / "requeued")},
                 launcher, tmp_path / "submitit")
    _wait_for([markers / "stalled-rank0", markers / "stalled-rank1"], job, slurm)
    assert sorted(p.name for p in (tmp_path / "requeued").glob("*.pt")) == ["step-00000003.pt"]
    job._interrupt(timeout=False)  # scancel --signal TERM, then USR2: what Slurm sends a preempted job
    # A requeued job waits ~2 minutes (Slurm's begin-time hold) unless told to start now.
    slurm.wait_for_state(job.job_id, {"PENDING"})
    subprocess.run(["scontrol", "update", f"JobId={job.job_id}", "StartTime=now"], check=True)
    summary = wait(job, tmp_path / "submitit")

    assert summary["finished"] and summary["steps"] == 6
    log = (job.stdout() or "") + (job.stderr() or "")
    for line in ("preemption: caught SIGUSR2", "Caught signal SIGUSR2 on", "this job is preempted",
                 "Calling checkpoint method.", f"Requeued job {job.job_id}"):
        assert line in log, (line, log[-3000:])
    # One answer to the signal: rank 0's trainer process (workers ignore it; rank 1 waits for the requeue).
    # submitit logs to both streams of each task; stdout holds every line once.
    out = job.stdout() or ""
    for line in ("Caught signal SIGUSR2 on", "Calling checkpoint method.", f"Requeued job {job.job_id}"):
        assert out.count(line) == 1, (line, out[-3000:])
    # Each rank's stderr: its trainer recorded the signal once; its 2 forked workers (same stream) never did.
    for rank in (0, 1):
        err = (tmp_path / "submitit" / str(job.job_id) / f"{job.job_id}_{rank}_log.err").read_text()
        assert err.count("preemption: caught SIGUSR2") == 1, (rank, err[-3000:])
    for rank in (0, 1):  # each rank ran twice: stalled, then resumed from step 5 (not from 3, nor from 0)
        assert len((markers / f"attempts-rank{rank}").read_text().splitlines()) == 2
        assert (markers / f"starts-rank{rank}").read_text().splitlines() == ["started at step 0",
                                                                             "started at step 5"]
    assert slurm.job(job.job_id)["State"] == "COMPLETED"
    assert [run["State"] for run in slurm.job_runs(job.job_id)] == ["REQUEUED", "COMPLETED"]
    expected = checkpoint_tensors(tmp_path / "uninterrupted" / "final.pt")
    actual = checkpoint_tensors(tmp_path / "requeued" / "final.pt")
    assert expected.keys() == actual.keys()
    assert [k for k in expected if not torch.equal(expected[k], actual[k])] == []
