"""End-to-end tier: `dvc repro` of the stages on the debug profile, in a scratch copy of the repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cosmos.config.compose import compose_params
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

_SKIP_TOP = {".venv", ".git", "data", "runs", ".pytest_cache", ".submitit"}


def _scratch_repo(dst: Path) -> Path:
    """A fresh git repository holding the project's files, without data, caches or the venv."""

    def ignore(directory, names):
        top = Path(directory) == REPO_ROOT
        dvc_state = Path(directory) == REPO_ROOT / ".dvc"
        return [
            n for n in names
            if (top and n in _SKIP_TOP) or (dvc_state and n in {"cache", "tmp"})
            or n == "__pycache__" or n.endswith(".egg-info")
        ]

    shutil.copytree(REPO_ROOT, dst, ignore=ignore)
    env = _env()
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "scratch"]):
        subprocess.run(cmd, cwd=dst, check=True, env=env)
    return dst


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def _dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_dvc_repro_builds_data_and_second_run_is_a_noop(tmp_path):
    repo = _scratch_repo(tmp_path / "repo")
    (repo / "params.yaml").write_text(compose_params(["profile=debug"]))
    first = _dvc(repo, "repro")
    assert "Running stage 'download'" in first.stdout and "Running stage 'shard'" in first.stdout

    raw, shards = repo / "data" / "synthetic" / "raw", repo / "data" / "synthetic" / "shards"
    for path in ("coco/annotations/captions_val2017.json", "classification/classnames.txt",
                 "voc_bg/ImageSets/Segmentation/val.txt", "voc_stuff/cls_synthetic_stuff.txt",
                 "sugarcrepe/swap_att.json", "pretrain/annotations.csv", "run_info.json"):
        assert (raw / path).exists(), path
    manifest = json.loads((shards / "manifest.json").read_text())
    assert manifest["num_samples"] == 600 and manifest["num_shards"] == 6
    info = json.loads((shards / "run_info.json").read_text())
    assert info["stage"] == "shard" and len(info["git"]["commit"]) == 40
    assert json.loads((repo / "reports" / "metrics" / "shard.json").read_text())["num_samples"] == 600

    second = _dvc(repo, "repro")
    assert "Running stage" not in second.stdout
    assert "Data and pipelines are up to date" in second.stdout


def test_stage_reports_bad_config_in_one_line(tmp_path):
    repo = _scratch_repo(tmp_path / "repo")
    (repo / "params.yaml").write_text(compose_params(["profile=debug", "data.generator.min_objects=0"]))
    proc = subprocess.run([sys.executable, "stages/download.py"], cwd=repo, env=_env(), capture_output=True, text=True)
    assert proc.returncode == 1
    assert "stage download failed: ValueError: data.generator.min_objects=0" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (repo / "data" / "synthetic" / "raw").exists()
