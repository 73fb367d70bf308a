"""A training process killed with SIGKILL right after a checkpoint resumes to bit-identical weights.

Both sides run one torch thread: CPU kernels split their reductions by thread count, so a killed process on
two threads and a resumed one on one differ in the last bits of every weight, kill or no kill.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import torch

from cosmos.training.checkpoint import CheckpointDir
from tests.conftest import REPO_ROOT

SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    import torch
    torch.set_num_threads(1)
    from tests.training.test_loop import _trainer
    trainer = _trainer({out!r}, {shards!r}, checkpoint_every=1)
    trainer.log = lambda step, metrics: time.sleep(0.3)  # leave the killer time to strike mid-run
    trainer.fit()
""")


def test_sigkilled_run_resumes_bit_identically(tiny_shards, tmp_path):
    from tests.training.test_loop import _state, _trainer

    out = tmp_path / "killed"
    script = SCRIPT.format(root=str(REPO_ROOT), out=str(out), shards=str(tiny_shards))
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT)
    deadline = time.monotonic() + 120
    while not (out / "step-00000004.pt").exists():
        assert proc.poll() is None, f"training exited early with {proc.returncode}"
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = max(int(p.stem.split("-")[1]) for p in CheckpointDir(out).paths())
    assert 4 <= killed_at < 6

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        resumed = _trainer(out, tiny_shards, checkpoint_every=1)
        assert resumed.position.step == killed_at
        resumed.fit()
        full = _trainer(tmp_path / "full", tiny_shards)
        full.fit()
    finally:
        torch.set_num_threads(threads)
    expected, actual = _state(full), _state(resumed)
    assert [k for k in expected if not torch.equal(expected[k], actual[k])] == []
