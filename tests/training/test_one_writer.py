"""One writer under a multi-process launch: ``torchrun`` runs ``stages/pretrain.py`` on two gloo ranks.

Every rank runs the stage script, so every rank would write the stage's outputs (``reports/metrics/
pretrain.json``, the curve JSON, checkpoints, ``run_info.json``) and clear stale checkpoints, racing each other
and the other rank's resume. Each rank here records every file it renames into place (all of the project's
writes are atomic renames) and every file it deletes: rank 1 must record none, rank 0 all of them, and the
stale checkpoint of another config is gone before either rank looks for one to resume from.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cosmos.config.compose import compose_params
from tests.conftest import REPO_ROOT

# Record, per rank, each os.replace target and each unlink, then run the stage as torchrun would.
_RECORDING_STAGE = """
import os, runpy, sys
log = open(f"{os.environ['WRITES_LOG']}.rank{os.environ.get('RANK', os.environ.get('SLURM_PROCID'))}", "a", buffering=1)
replace, unlink = os.replace, os.unlink
def recorded_replace(src, dst, *args, **kwargs):
    log.write(f"write {dst}\\n")
    return replace(src, dst, *args, **kwargs)
def recorded_unlink(path, *args, **kwargs):
    log.write(f"delete {path}\\n")
    return unlink(path, *args, **kwargs)
os.replace, os.unlink = recorded_replace, recorded_unlink
sys.argv = [sys.argv[1]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

OVERRIDES = ["profile=debug", "train.batch_size=16", "train.epochs=1", "train.device=cpu", "train.precision=fp32",
             "train.checkpoint_every=1", "train.keep_checkpoints=1", "train.shuffle_buffer=16",
             "train.shuffle_initial=4", "optim.warmup_steps=1", "train.val_every=0"]


def prepare(tmp_path: Path, shards: Path) -> dict:
    """A scratch stage folder (params, a stale checkpoint of another config, the recording wrapper); its env."""
    (tmp_path / "params.yaml").write_text(compose_params([*OVERRIDES, f"data.root={shards.parent}"]))
    checkpoints = tmp_path / "runs" / "pretrain" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save({"fingerprint": "another-config", "step": 1}, checkpoints / "step-00000001.pt")
    (tmp_path / "stage.py").write_text(_RECORDING_STAGE)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "WRITES_LOG": str(tmp_path / "writes"), "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def check_one_writer(tmp_path: Path) -> None:
    """Rank 1 wrote and deleted nothing; rank 0 cleared the stale checkpoint and wrote every output."""
    checkpoints = tmp_path / "runs" / "pretrain" / "checkpoints"
    rank1 = tmp_path / "writes.rank1"
    # multiprocessing's own shared-memory arenas (the loader's shared epoch counters) are not outputs.
    ipc = ("/dev/shm/", "/pymp-")
    outputs = [line for line in (rank1.read_text().splitlines() if rank1.exists() else [])
               if not any(marker in line for marker in ipc)]
    assert outputs == [], outputs
    rank0 = (tmp_path / "writes.rank0").read_text().splitlines()
    written = {(tmp_path / line.split(" ", 1)[1]).resolve() for line in rank0 if line.startswith("write ")}
    for out in ("reports/metrics/pretrain.json", "runs/curves/base.json",
                "runs/pretrain/checkpoints/run_info.json"):
        assert (tmp_path / out).resolve() in written, (out, rank0)
    deleted = {(tmp_path / line.split(" ", 1)[1]).resolve() for line in rank0 if line.startswith("delete ")}
    assert (checkpoints / "step-00000001.pt").resolve() in deleted, rank0
    assert [p.name for p in sorted(checkpoints.glob("*.pt"))] == ["final.pt"]
    summary = json.loads((tmp_path / "reports" / "metrics" / "pretrain.json").read_text())
    assert summary["finished"] and summary["steps"] == 3 and "rank" not in summary  # rank 0's summary
    ckpt = torch.load(checkpoints / "final.pt", weights_only=True, map_location="cpu")
    assert all(k.startswith("module.") for k in ckpt["student"])  # trained as one DDP world, not two runs


@pytest.mark.timeout(300)
def test_only_rank0_writes_stage_outputs_under_torchrun(tiny_shards, tmp_path):
    env = prepare(tmp_path, tiny_shards)
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", str(tmp_path / "stage.py"),
                           str(REPO_ROOT / "stages" / "pretrain.py")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    check_one_writer(tmp_path)
