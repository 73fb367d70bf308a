"""The parent side of fault injection: a tiny ``pretrain`` project, runs that are killed, and their resumes.

A :class:`Project` is a folder laid out as the pipeline's working tree for the ``pretrain`` stage
(``params.yaml``, ``data/shards``, ``data/raw/coco`` for the learning curve). :func:`run` starts
``python -m tests.faults.inject FAULT`` in it, optionally sends a signal after a delay, and returns what
happened. :func:`resume` re-runs the stage without a fault until it finishes (what ``dvc repro`` or a Slurm
requeue does), and :func:`outcome` compares the final checkpoint, tensor by tensor, and the learning curve
with those of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CKPTS = Path("runs/pretrain/checkpoints")
# A run of 12 steps with a checkpoint every 2, a curve point every 4: a few seconds of training per run.
OVERRIDES = ["profile=debug", "data.root=data", "train.checkpoint_every=2", "train.val_every=4", "train.val_images=20",
             "train.batch_size=16", "data.sizes.train=192", "train.log_every=1"]
DEADLINE_S = 600  # one child run; generous for a loaded 2-core machine (an unloaded run takes ~15 s)


@dataclass
class Run:
    """One child process: exit status (negative: killed by that signal), output, and wall seconds."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def finished(self) -> bool:
        return self.returncode == 0


def make_data(dst: Path) -> Path:
    """The debug benchmark's training shards and retrieval set (shared by every project), under ``dst``."""
    from cosmos.data.shard import shard_dataset
    from cosmos.data.synthetic.generate import SplitSizes, write_synthetic_benchmark
    from cosmos.data.synthetic.scene import SceneConfig

    raw = dst / "raw"
    write_synthetic_benchmark(raw, seed=0, scene=SceneConfig(), sizes=SplitSizes(
        train=192, retrieval=20, classification_per_class=1, segmentation=2, compositional=4, samples_per_tar=100))
    shard_dataset(raw / "pretrain" / "images", raw / "pretrain" / "annotations.csv", dst / "shards",
                  samples_per_shard=40)
    return dst


def make_project(dst: Path, data: Path, overrides: list[str] = ()) -> Path:
    """A project folder at ``dst`` whose ``data`` links to ``data`` (read only by the stage)."""
    from cosmos.config.compose import compose_params

    dst.mkdir(parents=True)
    (dst / "params.yaml").write_text(compose_params([*OVERRIDES, *overrides]), encoding="utf-8")
    (dst / "data").symlink_to(data.resolve(), target_is_directory=True)
    return dst


def run(project: Path, fault: str = "none", *, sig: signal.Signals | None = None, after_s: float = 0.0) -> Run:
    """Run the stage in ``project`` with ``fault`` armed; with ``sig``, send it ``after_s`` seconds in."""
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "tests.faults.inject", fault], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if sig is not None:
        try:
            proc.wait(timeout=after_s)
        except subprocess.TimeoutExpired:
            proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise TimeoutError(f"the pretrain stage in {project} (fault {fault}) did not end within {DEADLINE_S} s:\n"
                           f"{err[-2000:]}") from None
    return Run(proc.returncode, out, err, time.monotonic() - start)


def resume(project: Path, tries: int = 2) -> list[Run]:
    """Re-run the stage without a fault until it finishes; raises naming the last error if it does not."""
    runs = []
    for _ in range(tries):
        runs.append(run(project))
        if runs[-1].finished:
            return runs
    raise AssertionError(f"the stage did not finish after {tries} resumes; last stderr:\n{runs[-1].stderr[-2000:]}")


def checkpoints(project: Path) -> list[str]:
    """Names in the checkpoints folder, temp files included."""
    folder = project / CKPTS
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def final_tensors(project: Path) -> dict:
    """Every tensor of ``final.pt`` (student, teacher, optimizer state), flattened to ``{key: tensor}``."""
    from cosmos.models.checkpoint_io import load_checkpoint_file

    ckpt = load_checkpoint_file(project / CKPTS / "final.pt")
    flat = {}

    def walk(prefix: str, value) -> None:
        if hasattr(value, "dtype") and hasattr(value, "shape"):
            flat[prefix] = value
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}", item)
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(f"{prefix}.{i}", item)

    for part in ("student", "teacher", "optimizer"):
        walk(part, ckpt[part])
    return flat


def curve(project: Path) -> dict:
    return json.loads((project / "runs" / "curves" / "base.json").read_text(encoding="utf-8"))


@dataclass
class Outcome:
    """How a resumed project ended against the uninterrupted one."""

    identical_weights: bool
    identical_curve: bool
    differing: list[str]


def outcome(project: Path, reference: Path) -> Outcome:
    import torch

    want, got = final_tensors(reference), final_tensors(project)
    differing = sorted(k for k in want.keys() | got.keys()
                       if k not in want or k not in got or not torch.equal(want[k], got[k]))
    return Outcome(not differing, curve(project) == curve(reference), differing[:5])


def fresh(dst: Path) -> Path:
    """An empty folder at ``dst`` (removed first if it exists)."""
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    return dst
