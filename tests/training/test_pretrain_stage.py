"""End-to-end tier: the `pretrain` stage under `dvc repro` on the debug profile, and its config errors.

The uninterrupted run is the shared debug pipeline's (``debug_pipeline`` fixture), not one of its own."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from cosmos.config.compose import compose_params
from cosmos.method import DistillSwitches, build_student
from cosmos.models import load_cosmos_weights
from tests.pipeline_repo import dvc, env, scratch_repo

pytestmark = pytest.mark.slow


def test_pretrain_stage_trains_and_writes_its_outputs(debug_pipeline):
    repo = debug_pipeline.repo
    debug = yaml.safe_load(compose_params(["profile=debug"]))
    steps = debug["data"]["sizes"]["train"] // debug["train"]["batch_size"]
    assert "Running stage 'pretrain'" in debug_pipeline.first.stdout

    metrics = json.loads((repo / "reports" / "metrics" / "pretrain.json").read_text())
    assert metrics["finished"] and metrics["steps"] == steps and metrics["checkpoint"] == "final.pt"
    out = repo / "runs" / "pretrain"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["final.pt", "run_info.json"]
    for name in ("loss", "clip_loss", "distill_loss", "lr", "momentum", "temperature", "samples_per_s"):
        assert (out / "live" / "plots" / "metrics" / "train" / f"{name}.tsv").exists(), name
    switches = DistillSwitches(global_crop_size=32, local_crop_size=16)
    for which in ("student", "teacher"):
        load_cosmos_weights(build_student("cosmos-tiny", switches), out / "checkpoints" / "final.pt", which)
        load_cosmos_weights(build_student("cosmos-tiny", switches), debug_pipeline.base_final, which)
    assert "Running stage" not in dvc(repo, "repro", "pretrain").stdout


def test_pretrain_stage_names_a_bad_key_in_one_line(tmp_path):
    repo = scratch_repo(tmp_path / "repo")
    (repo / "params.yaml").write_text(compose_params(["profile=debug", "launcher.tasks_per_node=3"]))
    proc = subprocess.run([sys.executable, "stages/pretrain.py"], cwd=repo, env=env(), capture_output=True,
                          text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("stage pretrain failed: ValueError: train.batch_size=32 is not divisible by the "
                                   "world size 3 (launcher.nodes x launcher.tasks_per_node)")


def test_a_stage_killed_under_dvc_resumes_to_the_uninterrupted_weights(tmp_path, debug_pipeline):
    """The checkpoints folder is `persist: true`: `dvc repro` after an interrupted pretrain resumes from its
    step checkpoint (not from step 0), sweeps the interrupted write's temp file, and ends with the weights of
    the shared pipeline's uninterrupted run (checkpoint frequency does not touch the math).
    `train.max_steps` stands in for the kill: it stops after a checkpoint and fails."""
    import torch

    from cosmos.models.checkpoint_io import load_checkpoint_file

    repo = scratch_repo(tmp_path / "interrupted")
    overrides = ["profile=debug", "train.checkpoint_every=1"]
    (repo / "params.yaml").write_text(compose_params([*overrides, "train.max_steps=3"]))
    proc = subprocess.run([sys.executable, "-m", "dvc", "repro", "pretrain"], cwd=repo, env=env(),
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "training stopped at step 3" in proc.stdout + proc.stderr
    ckpts = repo / "runs" / "pretrain" / "checkpoints"
    assert (ckpts / "step-00000003.pt").exists()
    (ckpts / ".step-00000004.pt.x1y2.tmp").write_bytes(b"half a checkpoint")
    (repo / "params.yaml").write_text(compose_params(overrides))
    proc = dvc(repo, "repro", "pretrain")
    assert "resumed from step-00000003.pt at step 3" in proc.stdout + proc.stderr
    assert not list(ckpts.glob(".*.tmp"))
    resumed, want = load_checkpoint_file(ckpts / "final.pt"), load_checkpoint_file(debug_pipeline.base_final)
    for key in ("student", "teacher"):
        a, b = want[key], resumed[key]
        assert [k for k in a if not torch.equal(a[k], b[k])] == [], key


def test_a_changed_config_under_dvc_trains_anew(tmp_path):
    """A persisted folder never leaks one config's checkpoints into another's run: the finished `final.pt`
    and another config's step checkpoints are cleared before the stage trains."""
    repo = scratch_repo(tmp_path / "repo")
    (repo / "params.yaml").write_text(compose_params(["profile=debug", "train.checkpoint_every=1",
                                                      "train.max_steps=2"]))
    subprocess.run([sys.executable, "-m", "dvc", "repro", "pretrain"], cwd=repo, env=env(), capture_output=True)
    (repo / "params.yaml").write_text(compose_params(["profile=debug", "optim.lr=0.003"]))
    proc = dvc(repo, "repro", "pretrain")
    assert "resumed from" not in proc.stdout + proc.stderr
    removed = [line for line in (proc.stdout + proc.stderr).splitlines() if "pretrain: removed stale" in line]
    assert len(removed) == 1 and "step-00000002.pt" in removed[0]
    metrics = json.loads((repo / "reports" / "metrics" / "pretrain.json").read_text())
    assert metrics["finished"] and metrics["final"]["loss"] > 0
