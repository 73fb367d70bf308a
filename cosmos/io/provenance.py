"""What every stage writes beside its outputs: resolved config, git revision, seed, package versions.

A reader of any output folder can rebuild the exact run from `run_info.json` (house style 11).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from cosmos.io.atomic import atomic_write_json

_PACKAGES = ("torch", "torchvision", "open_clip_torch", "webdataset", "numpy", "pillow", "dvc", "hydra-core")


def _head_and_changes(cwd: str | Path) -> tuple[str, list[str]] | None:
    """HEAD and the tracked paths that differ from it (`_changed_paths`); None outside a git checkout."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             check=True).stdout.strip()
        return rev, _changed_paths(cwd)
    except (OSError, subprocess.CalledProcessError):
        return None


def git_revision(cwd: str | Path = ".") -> dict[str, Any]:
    """The commit and whether the work tree had uncommitted changes; `unknown` outside a git checkout."""
    found = _head_and_changes(cwd)
    if found is None:
        return {"commit": "unknown", "dirty": None}
    return {"commit": found[0], "dirty": bool(found[1])}


# What a pipeline run itself rewrites: the lock, the generated reports and (under `dvc exp run -S`) the
# composed params. Their changes say nothing about the code that produced the numbers.
PIPELINE_OUTPUTS: tuple[str, ...] = ("dvc.lock", "reports/", "params.yaml")


def _changed_paths(cwd: str | Path) -> list[str]:
    """Tracked paths whose work-tree or index content differs from HEAD (`git status --porcelain` v1)."""
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                         capture_output=True, text=True, check=True).stdout
    paths = []
    for line in out.splitlines():
        path = line[3:]
        paths.extend(p.strip('"') for p in path.split(" -> "))  # a rename lists both names
    return paths


def code_revision(cwd: str | Path = ".", outputs: tuple[str, ...] = PIPELINE_OUTPUTS) -> dict[str, Any]:
    """The code revision a pipeline run used: HEAD, the tracked files other than `outputs` that differ from
    it (`changed_code`, sorted), and whether params.yaml does. `commit` is `unknown` outside a checkout.

    `git_revision`'s `dirty` is true during every `dvc repro`, because the run rewrites dvc.lock and
    reports/ before the report is written; this separates those from a change to the code itself.
    """
    found = _head_and_changes(cwd)
    if found is None:
        return {"commit": "unknown", "changed_code": [], "params_changed": None}
    rev, changed = found

    def is_output(path: str) -> bool:
        return any(path == o or (o.endswith("/") and path.startswith(o)) for o in outputs)

    return {"commit": rev, "changed_code": sorted(p for p in set(changed) if not is_output(p)),
            "params_changed": "params.yaml" in changed}


def pipeline_command(select: str = "", env: dict[str, str] | None = None) -> str:
    """The command that ran the pipeline, from the variables DVC sets for a stage's process: `dvc exp run`
    sets DVC_EXP_NAME, every DVC stage DVC_STAGE; without either the report stage ran by hand. `select` is
    the `-S` override that chose the grid (`ablation.select`, e.g. `ablation=full`)."""
    env = dict(os.environ if env is None else env)
    if env.get("DVC_EXP_NAME"):
        return "dvc exp run" + (f" -S {select}" if select else "")
    if env.get("DVC_STAGE"):
        return "dvc repro"
    return "python stages/ablation_tables.py"


def package_versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def run_info(stage: str, config: dict[str, Any], seed: int | None) -> dict[str, Any]:
    """The provenance record of one stage run. `written_at` is the only field that varies between reruns."""
    return {
        "stage": stage,
        "seed": seed,
        "config": config,
        "git": git_revision(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_run_info(out_dir: str | Path, stage: str, config: dict[str, Any], seed: int | None) -> Path:
    """Write `run_info.json` into `out_dir` (atomically) and return its path."""
    path = Path(out_dir) / "run_info.json"
    atomic_write_json(path, run_info(stage, config, seed))
    return path
