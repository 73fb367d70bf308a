"""``launcher=submitit_local``: the pretrain stage trains inside a submitit LocalExecutor job.

- the stage blocks until the job is done and writes the same outputs as ``launcher=local``;
- a job that fails inside (a shard folder without a manifest) fails the stage with exit 1, the job's
  error and the tail of its log;
- a job that runs into its time limit gets USR2, is requeued through ``_Task.checkpoint`` (a
  ``DelayedSubmission``), resumes from its last checkpoint and ends on the weights of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from cosmos.config.compose import compose_params
from cosmos.training.launch import _Task
from cosmos.training.loop import Trainer
from cosmos.training.pretrain import run_pretrain
from tests.conftest import REPO_ROOT
from tests.training.checkpoint_tensors import checkpoint_tensors

pytestmark = pytest.mark.slow

# 60 tiny samples, 16 per step: 3 steps per epoch.
DEBUG = ["profile=debug", "train.batch_size=16", "train.data_fraction=1.0", "train.shuffle_buffer=16",
         "train.shuffle_initial=4", "optim.warmup_steps=1", "train.device=cpu", "launcher.timeout_min=5"]


def _params(root: Path, *overrides: str) -> dict:
    return yaml.safe_load(compose_params([*DEBUG, f"data.root={root}", *overrides]))


def _run_stage(cwd: Path, params: dict) -> subprocess.CompletedProcess:
    (cwd / "params.yaml").write_text(yaml.safe_dump(params))
    # One thread per process: the stage and its job must not oversubscribe cores shared with other work.
    return subprocess.run([sys.executable, str(REPO_ROOT / "stages" / "pretrain.py")], cwd=cwd, text=True,
                          capture_output=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"})


def test_stage_blocks_on_the_job_and_writes_the_checkpoint(tiny_shards, tmp_path):
    proc = _run_stage(tmp_path, _params(tiny_shards.parent, "launcher=submitit_local", "train.epochs=1",
                                        "train.checkpoint_every=0"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "submitted local job" in proc.stdout
    metrics = json.loads((tmp_path / "reports" / "metrics" / "pretrain.json").read_text())
    assert metrics["finished"] and metrics["steps"] == 3 and metrics["checkpoint"] == "final.pt"
    ckpt = torch.load(tmp_path / "runs" / "pretrain" / "checkpoints" / "final.pt", weights_only=True)
    assert ckpt["step"] == 3 and ckpt["name"] == "cosmos-cosmos-tiny"
    logs = list((tmp_path / "runs" / "pretrain" / "submitit").glob("*/*_log.err"))
    assert len(logs) == 1  # the job's own log folder


def test_a_failing_job_fails_the_stage_with_its_log_tail(tmp_path):
    (tmp_path / "empty" / "shards").mkdir(parents=True)
    proc = _run_stage(tmp_path, _params(tmp_path / "empty", "launcher=submitit_local"))
    assert proc.returncode == 1
    first, *tail = proc.stderr.strip().splitlines()
    assert first.startswith("stage pretrain failed: LaunchError: training job ")
    assert "FileNotFoundError" in first and "manifest.json not found" in first
    assert tail[0] == "--- job log tail ---" and "read_shard_set" in "\n".join(tail)
    assert not (tmp_path / "reports" / "metrics" / "pretrain.json").exists()


def _pretrain_stalling_once(stall_at: int, attempts_file: str, **kwargs):
    """``run_pretrain``; the job's first attempt stalls before step ``stall_at + 1`` until USR2 requeues it.

    Only the first attempt stalls (``attempts_file`` counts them), so every requeued attempt resumes from
    the newest checkpoint and trains on, however slow the machine. One thread: no oversubscription when
    other processes share the cores (the uninterrupted reference run uses one thread too).
    """
    torch.set_num_threads(1)
    attempts = Path(attempts_file)
    first = not attempts.exists()
    with attempts.open("a") as f:
        f.write("attempt\n")
    if first:
        step_on_device = Trainer.step_on_device  # what Trainer.fit calls for every step

        def stalling(self, batch):
            if self.position.step == stall_at:
                time.sleep(600)  # interrupted by USR2 well before this ends
            return step_on_device(self, batch)

        Trainer.step_on_device = stalling  # this process is the job's own; nothing else sees the patch
    return run_pretrain(**kwargs)



@pytest.mark.timeout(240)
def test_a_timed_out_job_is_requeued_and_resumes_to_the_uninterrupted_weights(tiny_shards, tmp_path, monkeypatch):
    import importlib

    import submitit

    # 2 epochs of 3 steps, a checkpoint after every step.
    params = _params(tiny_shards.parent, "train.epochs=2", "train.checkpoint_every=1", "train.precision=fp32")
    kwargs = dict(params=params, live_dir=str(tmp_path / "live"), shard_dir=str(tiny_shards))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = run_pretrain(**kwargs, out_dir=str(tmp_path / "uninterrupted"))
    finally:
        torch.set_num_threads(threads)
    assert reference["finished"] and reference["steps"] == 6

    # USR2 reaches the job 60 - 45 = 15 s after each (re)start. The first attempt stalls after step 4 (epoch 1,
    # batch 1: a mid-epoch checkpoint) until then; 5 timeouts leave room for a slow machine.
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))  # the job unpickles this module's function by name
    module = importlib.import_module("tests.training.test_submitit_pretrain")
    executor = submitit.LocalExecutor(folder=str(tmp_path / "submitit" / "%j"), max_num_timeout=5)
    executor.update_parameters(timeout_min=1, signal_delay_s=45)
    job_kwargs = {"stall_at": 4, "attempts_file": str(tmp_path / "attempts.txt"), **kwargs,
                  "out_dir": str(tmp_path / "requeued")}
    job = executor.submit(_Task(module._pretrain_stalling_once, job_kwargs, distributed=False))
    summary = job.result()
    log = job.stderr() or ""
    assert "Caught signal SIGUSR2" in log and "this job is timed-out" in log, log[-2000:]
    assert len((tmp_path / "attempts.txt").read_text().split()) >= 2  # requeued: the function ran again
    assert summary["finished"] and summary["steps"] == 6
    expected = checkpoint_tensors(tmp_path / "uninterrupted" / "final.pt")
    actual = checkpoint_tensors(tmp_path / "requeued" / "final.pt")
    assert expected.keys() == actual.keys()
    assert [k for k in expected if not torch.equal(expected[k], actual[k])] == []
