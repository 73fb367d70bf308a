"""The grid in parallel on the local Slurm: ``python -m cosmos.ablation.parallel`` in a scratch copy of the repo.

A grid of 2 training stages (``ablation_train@clip`` and its replicate ``ablation_seed_train@clip-1``), each
a 1-task, 1-CPU job on the 2-CPU node:

- both jobs are submitted before either ends, their ``sacct`` Start/End intervals overlap, each
  stage collects its own job, and DVC caches both: a second ``dvc repro`` runs nothing and submits nothing;
- a variant's weights are bit-identical to an in-process run of the same arguments on one thread (what the
  sequential ``dvc repro`` job computes);
- a failing job fails its stage with one line naming the stage, the job id and its log folder;
- Ctrl-C cancels every job the command submitted, and DVC records nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from tests.pipeline_repo import dvc as _dvc, env as _env, scratch_repo as _scratch_repo

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(1500)]

# The debug profile (10 steps of 32), every job 1 task of 1 CPU; a grid of clip at seed 0 and at seed 1.
OVERRIDES = ["profile=debug", "train.device=cpu", "launcher=slurm", "launcher.tasks_per_node=1",
             "launcher.cpus_per_task=1", "launcher.gpus_per_node=0", "launcher.timeout_min=10",
             "ablation.run=[clip]", "ablation.replicated=[clip]", "ablation.extra_seeds=[1]"]
TARGETS = ["ablation_train", "ablation_seed_train"]
RUNS = {"ablation_train@clip": "clip", "ablation_seed_train@clip-1": "clip-s1"}


@pytest.fixture(scope="module")
def repo(slurm, tmp_path_factory) -> Path:
    return _scratch_repo(tmp_path_factory.mktemp("slurm-grid") / "repo")


def _parallel(repo: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "cosmos.ablation.parallel", *overrides, "--targets", *TARGETS]
    return subprocess.run(cmd, cwd=repo, env=_env(), capture_output=True, text=True, timeout=1200)


def _submitted(out: str) -> dict[str, int]:
    """Run -> job id, from the ``submitted slurm job <id>; logs in .../runs/ablation/<run>/submitit/<id>`` lines."""
    jobs = {}
    for line in out.splitlines():
        if line.startswith("submitted slurm job "):
            job_id = int(line.split()[3].rstrip(";"))
            jobs[Path(line.split("logs in ")[1]).parents[1].name] = job_id
    return jobs


def _times(job_id: int) -> tuple[datetime, datetime, datetime]:
    """The job's Submit, Start and End times from accounting (its latest run)."""
    out = subprocess.run(["sacct", "-X", "--noheader", "--parsable2", f"--jobs={job_id}",
                          "--format=Submit,Start,End"], capture_output=True, text=True, check=True,
                         timeout=60).stdout.split()[-1]
    submit, start, end = (datetime.fromisoformat(t) for t in out.split("|"))
    return submit, start, end


def _locked(repo: Path) -> dict:
    lock = repo / "dvc.lock"
    stages = yaml.safe_load(lock.read_text())["stages"] if lock.exists() else {}
    return {k: v for k, v in stages.items() if k in RUNS}


def _record(repo: Path, run: str) -> Path:
    return repo / "runs" / "ablation" / run / "submitit" / "ahead.json"


def test_the_grid_trains_concurrently_and_dvc_caches_every_variant(slurm, repo):
    proc = _parallel(repo, *OVERRIDES)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    jobs = _submitted(proc.stdout)
    assert set(jobs) == set(RUNS.values()), out
    for stage, run in RUNS.items():  # each stage waited on the job submitted ahead for it, then dropped the record
        assert f"{stage}: collecting slurm job {jobs[run]}, submitted ahead" in proc.stdout, out
        assert not _record(repo, run).exists(), "a collected record is deleted"
    infos = {run: slurm.job(job_id, timeout_s=120) for run, job_id in jobs.items()}
    for info in infos.values():
        assert info["State"] == "COMPLETED" and info["AllocCPUS"] == "1" and info["WorkDir"] == str(repo), info
    (q1, s1, e1), (q2, s2, e2) = (_times(job_id) for job_id in jobs.values())
    assert max(q1, q2) <= min(e1, e2), f"a job was submitted only after the other ended: {q1}-{e1} and {q2}-{e2}"
    assert max(s1, s2) < min(e1, e2), f"the jobs ran one after the other: {s1}-{e1} and {s2}-{e2}"

    # DVC recorded and cached both stages as a sequential run would: nothing left to run, nothing submitted.
    assert set(_locked(repo)) == set(RUNS)
    status = subprocess.run([sys.executable, "-m", "dvc", "status", "--json", *TARGETS], cwd=repo, env=_env(),
                            capture_output=True, text=True, check=True)
    assert json.loads(status.stdout) == {}, status.stdout
    before = slurm.job_ids()
    again = _dvc(repo, "repro", *TARGETS)
    assert "Running stage" not in again.stdout and slurm.job_ids() == before

    # The weights are the sequential path's: an in-process run of the same arguments on one thread (the
    # job's torch threads = its 1 CPU) ends on the same tensors and the same final losses.
    ref = repo.parent / "in-process"
    code = ("import json, sys, yaml\n"
            "from cosmos.ablation.run import _run_params\n"
            "from cosmos.training.pretrain import pretrain_job, run_pretrain\n"
            "_, vparams = _run_params(yaml.safe_load(open('params.yaml')), 'clip', None)\n"
            "summary = run_pretrain(**pretrain_job(vparams, sys.argv[1], 'data/synthetic/shards'))\n"
            "json.dump(summary, open(sys.argv[2], 'w'))\n")
    subprocess.run([sys.executable, "-c", code, str(ref), str(ref / "summary.json")], cwd=repo, check=True,
                   env={**_env(), "OMP_NUM_THREADS": "1"}, capture_output=True, timeout=600)
    import torch

    got = torch.load(repo / "runs" / "ablation" / "clip" / "checkpoints" / "final.pt", weights_only=False)
    want = torch.load(ref / "checkpoints" / "final.pt", weights_only=False)
    assert got["step"] == want["step"] == 10 and got["fingerprint"] == want["fingerprint"]
    assert got["student"].keys() == want["student"].keys()
    unequal = [k for k in want["student"] if not torch.equal(got["student"][k], want["student"][k])]
    assert not unequal, f"weights differ from the in-process run: {unequal[:5]}"
    metrics = json.loads((repo / "reports" / "metrics" / "ablation" / "clip_train.json").read_text())
    summary = json.loads((ref / "summary.json").read_text())
    assert metrics["final"] == summary["final"] and metrics["curve"] == summary["curve"]


def test_a_failing_job_fails_its_stage_naming_the_job_and_its_log(slurm, repo):
    locked = _locked(repo)
    proc = _parallel(repo, *OVERRIDES, "train.resume=/no/such/checkpoint.pt")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    jobs = _submitted(proc.stdout)
    assert set(jobs) == set(RUNS.values()), out
    failed = [stage for stage in RUNS if f"stage {stage} failed: " in out]
    assert len(failed) == 1, f"dvc repro stops at the first failed stage:\n{out}"
    run = RUNS[failed[0]]
    logs = repo / "runs" / "ablation" / run / "submitit" / str(jobs[run])
    assert (f"stage {failed[0]} failed: LaunchError: training job {jobs[run]} failed: FileNotFoundError" in out
            and f"(logs: {logs})" in out), out
    assert "/no/such/checkpoint.pt" in out and "--- job log tail ---" in out
    assert slurm.job(jobs[run], timeout_s=120)["State"] == "FAILED"
    assert not _record(repo, run).exists(), "a failed job is reported once; the next run submits anew"
    (other_stage, other), = ((s, r) for s, r in RUNS.items() if r != run)
    assert "not collected, still recorded" in proc.stderr and f"{other_stage}={jobs[other]}" in proc.stderr, out
    assert _record(repo, other).exists(), "the job DVC did not reach stays recorded, for the next run to collect"
    assert _locked(repo) == locked, "DVC recorded nothing"


def test_ctrl_c_cancels_every_job_the_grid_submitted(slurm, repo, tmp_path):
    locked = _locked(repo)
    log = tmp_path / "parallel.log"
    # 60 epochs (600 steps, about a minute of CLIP): the jobs still run when the interrupt comes. At 5 epochs
    # a fast CLIP job could finish before its stage began collecting it, and the grid then ended with 0.
    cmd = [sys.executable, "-m", "cosmos.ablation.parallel", *OVERRIDES, "optim.lr=0.0007", "train.epochs=60",
           "--targets", *TARGETS]
    with log.open("w") as sink:  # its own process group, as a terminal's foreground job: Ctrl-C reaches all of it
        # A terminal's foreground job has SIGINT at its default; a suite started in the background by a
        # non-interactive shell (`cmd &`) inherits it ignored, and Python then never raises KeyboardInterrupt.
        proc = subprocess.Popen(cmd, cwd=repo, env={**_env(), "PYTHONUNBUFFERED": "1"}, stdout=sink,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            deadline = time.monotonic() + 600
            while "collecting slurm job" not in log.read_text():  # a stage is waiting on its job
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, f"no stage waited on a job within 600 s:\n{log.read_text()}"
                time.sleep(0.5)
            jobs = _submitted(log.read_text())
            assert set(jobs) == set(RUNS.values()), log.read_text()
            os.killpg(proc.pid, signal.SIGINT)
            rc = proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert rc == 130, text
    assert "interrupted: the grid's jobs are cancelled" in text
    for run, job_id in jobs.items():
        assert slurm.job(job_id, timeout_s=120)["State"].startswith("CANCELLED"), (run, job_id, text)
        assert not _record(repo, run).exists()
    assert _locked(repo) == locked, "DVC recorded nothing"
