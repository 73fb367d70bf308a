"""A plain ``srun -n 2`` around a stage (``launcher=local``): the step's two tasks form one gloo world
(``init_distributed`` reads the step from Slurm), and only rank 0 writes the stage's outputs and clears stale
checkpoints (the recording wrapper and checks of tests/training/test_one_writer.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from tests.training.test_one_writer import check_one_writer, prepare

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(600)]


def test_only_rank0_writes_stage_outputs_under_plain_srun(slurm, tiny_shards, tmp_path):
    env = prepare(tmp_path, tiny_shards)
    proc = subprocess.run(["srun", "--ntasks=2", "--cpus-per-task=1", "--kill-on-bad-exit=1", "--time=10",
                           sys.executable, str(tmp_path / "stage.py"), str(REPO_ROOT / "stages" / "pretrain.py")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    check_one_writer(tmp_path)
