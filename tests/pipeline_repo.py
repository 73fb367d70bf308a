"""Scratch copies of the repository for the end-to-end tier, and the one debug pipeline run they share.

:func:`scratch_repo` copies the project's files (no data, caches or venv) into a fresh git repository;
:func:`dvc` runs DVC there and fails naming its output. :func:`debug_pipeline` runs the whole ``dvc repro``
of the debug profile once per pytest session (the ``debug_pipeline`` fixture of ``tests/conftest.py``): the
pipeline test, the pretrain-stage tests and the resume test all read that one run instead of training
their own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cosmos.config.compose import compose_params

REPO_ROOT = Path(__file__).resolve().parents[1]
_SKIP_TOP = {".venv", ".git", "data", "runs", ".pytest_cache", ".submitit"}


def scratch_repo(dst: Path) -> Path:
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
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "scratch"]):
        subprocess.run(cmd, cwd=dst, check=True, env=env())
    return dst


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{out['PATH']}"
    out["DVC_NO_ANALYTICS"] = "1"
    return out


def dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@dataclass(frozen=True)
class DebugPipeline:
    """The shared run: its repository, the first ``dvc repro``'s output, and that run's ``final.pt`` as it
    was (the pipeline test goes on to run an experiment in the repository, which replaces it)."""

    repo: Path
    first: subprocess.CompletedProcess
    base_final: Path


def debug_pipeline(root: Path) -> DebugPipeline:
    repo = scratch_repo(root / "repo")
    (repo / "params.yaml").write_text(compose_params(["profile=debug"]))
    first = dvc(repo, "repro")
    base_final = root / "base_final.pt"
    shutil.copyfile(repo / "runs" / "pretrain" / "checkpoints" / "final.pt", base_final)
    return DebugPipeline(repo, first, base_final)
