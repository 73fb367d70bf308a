"""End-to-end tier: the `pretrain` stage under `dvc repro` on the debug profile, and its config errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from cosmos.config.compose import compose_params
from cosmos.method import DistillSwitches, build_student
from cosmos.models import load_cosmos_weights
from tests.test_pipeline import _dvc, _env, _scratch_repo

pytestmark = pytest.mark.slow


def test_pretrain_stage_trains_and_writes_its_outputs(tmp_path):
    repo = _scratch_repo(tmp_path / "repo")
    text = compose_params(["profile=debug"])
    (repo / "params.yaml").write_text(text)
    debug = yaml.safe_load(text)
    steps = debug["data"]["sizes"]["train"] // debug["train"]["batch_size"]
    proc = _dvc(repo, "repro", "pretrain")
    assert "Running stage 'pretrain'" in proc.stdout

    metrics = json.loads((repo / "reports" / "metrics" / "pretrain.json").read_text())
    assert metrics["finished"] and metrics["steps"] == steps and metrics["checkpoint"] == "final.pt"
    out = repo / "runs" / "pretrain"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["final.pt", "run_info.json"]
    for name in ("loss", "clip_loss", "distill_loss", "lr", "momentum", "temperature", "samples_per_s"):
        assert (out / "live" / "plots" / "metrics" / "train" / f"{name}.tsv").exists(), name
    switches = DistillSwitches(global_crop_size=32, local_crop_size=16)
    for which in ("student", "teacher"):
        load_cosmos_weights(build_student("cosmos-tiny", switches), out / "checkpoints" / "final.pt", which)
    assert "Running stage" not in _dvc(repo, "repro", "pretrain").stdout


def test_pretrain_stage_names_a_bad_key_in_one_line(tmp_path):
    repo = _scratch_repo(tmp_path / "repo")
    (repo / "params.yaml").write_text(compose_params(["profile=debug", "launcher.tasks_per_node=3"]))
    proc = subprocess.run([sys.executable, "stages/pretrain.py"], cwd=repo, env=_env(), capture_output=True,
                          text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("stage pretrain failed: ValueError: train.batch_size=32 is not divisible by the "
                                   "world size 3 (launcher.nodes x launcher.tasks_per_node)")
