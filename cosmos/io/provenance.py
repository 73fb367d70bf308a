"""What every stage writes beside its outputs: resolved config, git revision, seed, package versions.

A reader of any output folder can rebuild the exact run from `run_info.json` (house style 11).
"""

from __future__ import annotations

import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from cosmos.io.atomic import atomic_write_json

_PACKAGES = ("torch", "torchvision", "open_clip_torch", "webdataset", "numpy", "pillow", "dvc", "hydra-core")


def git_revision(cwd: str | Path = ".") -> dict[str, Any]:
    """The commit and whether the work tree had uncommitted changes; `unknown` outside a git checkout."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=cwd, capture_output=True, text=True, check=True,
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "dirty": None}
    return {"commit": rev, "dirty": dirty}


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
