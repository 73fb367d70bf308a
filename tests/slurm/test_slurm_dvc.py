"""The `pretrain` stage with ``launcher=slurm`` (2 tasks, gloo DDP) under DVC, in a scratch copy of the repo.

- a job that fails makes ``dvc repro`` fail with the job's error and log tail, and DVC records nothing;
- ``dvc repro`` blocks until the job has succeeded, then caches the outputs; a second run submits nothing;
- a queued grid (``dvc exp run --queue`` + ``--run-all``) runs each experiment as its own Slurm job, from
  its ``.dvc/tmp/exps`` copy.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cosmos.ablation.experiments import read_dvc_experiments
from cosmos.config.compose import compose_params
from tests.pipeline_repo import dvc as _dvc, env as _env, scratch_repo as _scratch_repo

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(900)]

# The debug profile cut to 64 training samples: 4 steps of 16 (8 per rank).
OVERRIDES = ["profile=debug", "data.sizes.train=64", "train.batch_size=16", "optim.warmup_steps=1",
             "train.device=cpu", "launcher=slurm", "launcher.tasks_per_node=2", "launcher.cpus_per_task=1",
             "launcher.gpus_per_node=0", "launcher.timeout_min=10"]


@pytest.fixture(scope="module")
def repo(slurm, tmp_path_factory) -> Path:
    """A scratch repository on the Slurm overrides, with `download` and `shard` run and committed."""
    repo = _scratch_repo(tmp_path_factory.mktemp("slurm-dvc") / "repo")
    (repo / "params.yaml").write_text(compose_params(OVERRIDES))
    _dvc(repo, "repro", "shard")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "data for the slurm tests")
    return repo


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, env=_env())


def _dvc_may_fail(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=_env(), capture_output=True, text=True)


def _locked_stages(repo: Path) -> dict:
    lock = repo / "dvc.lock"
    return yaml.safe_load(lock.read_text())["stages"] if lock.exists() else {}


def test_a_failed_job_fails_the_stage_with_its_log_tail_and_nothing_is_cached(slurm, repo):
    (repo / "params.yaml").write_text(compose_params([*OVERRIDES, "train.resume=/no/such/checkpoint.pt"]))
    locked = _locked_stages(repo).get("pretrain")
    try:
        proc = _dvc_may_fail(repo, "repro", "pretrain")
    finally:
        (repo / "params.yaml").write_text(compose_params(OVERRIDES))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    job_id = slurm.submitted_job_id(proc.stdout)
    assert f"stage pretrain failed: LaunchError: training job {job_id} failed: FileNotFoundError" in out, out
    assert "/no/such/checkpoint.pt" in out and "--- job log tail ---" in out, out
    assert slurm.job(job_id)["State"] == "FAILED"  # the job really ran, and Slurm saw it fail
    assert _locked_stages(repo).get("pretrain") == locked  # DVC recorded nothing
    assert not (repo / "runs" / "pretrain" / "checkpoints" / "final.pt").exists()


def test_dvc_repro_blocks_on_the_job_then_caches_its_outputs(slurm, repo):
    proc = _dvc(repo, "repro", "pretrain")
    assert "Running stage 'pretrain'" in proc.stdout
    job_id = slurm.submitted_job_id(proc.stdout)
    info = slurm.job(job_id)
    assert info["State"] == "COMPLETED" and info["AllocCPUS"] == "2" and info["WorkDir"] == str(repo)
    metrics = json.loads((repo / "reports" / "metrics" / "pretrain.json").read_text())
    assert metrics["finished"] and metrics["steps"] == 4 and metrics["checkpoint"] == "final.pt"
    assert (repo / "runs" / "pretrain" / "submitit" / str(job_id) / f"{job_id}_1_log.err").exists()  # rank 1 ran

    outs = {o["path"]: o for o in _locked_stages(repo)["pretrain"]["outs"]}
    md5 = outs["runs/pretrain/checkpoints"]["md5"]  # a directory: <md5>.dir in the cache
    assert (repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).exists()
    before = slurm.job_ids()
    again = _dvc(repo, "repro", "pretrain")
    assert "Running stage" not in again.stdout and slurm.job_ids() == before


def test_a_queued_grid_runs_each_experiment_as_a_slurm_job(slurm, repo):
    before = slurm.job_ids()
    # A learning rate no other test trained with: DVC's run cache would restore a finished run, not train.
    sets = [arg for o in [*OVERRIDES, "optim.lr=0.0004"] for arg in ("-S", o)]
    _dvc(repo, "exp", "run", "--queue", "pretrain", *sets, "-S", "distill.text_crop=true,false")
    _dvc(repo, "exp", "run", "--run-all")

    new = sorted(slurm.job_ids() - before)
    assert len(new) == 2, new
    for job_id in new:
        info = slurm.job(job_id)
        assert info["State"] == "COMPLETED" and info["AllocCPUS"] == "2", info
        assert f"{repo}/.dvc/tmp/exps/" in info["WorkDir"], info  # submitted from the queued copy

    runs = {}
    for entry in read_dvc_experiments(repo):
        for exp in entry.get("experiments") or []:
            for rev in exp.get("revs") or []:
                data = rev.get("data") or {}
                params = data.get("params", {}).get("params.yaml", {}).get("data", {})
                metrics = data.get("metrics", {}).get("reports/metrics/pretrain.json", {}).get("data", {})
                if "distill" in params:
                    runs[params["distill"]["text_crop"]] = (params["launcher"]["name"], params["optim"]["lr"], metrics)
    assert set(runs) == {True, False}, runs
    for launcher, lr, metrics in runs.values():
        assert launcher == "slurm" and lr == 0.0004 and metrics["finished"] and metrics["steps"] == 4
