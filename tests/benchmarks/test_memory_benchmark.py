"""benchmarks/memory.py end to end in a tiny configuration: every variant of the batch comes back with finite
positive timings and memory, and checkpointing and accumulation leave the step-0 loss unchanged.

Behaviour, not timings: memory and speed on a shared CPU vary, so only their sign and finiteness are checked.
"""

import json
import math
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, load_script

SCRIPT = REPO_ROOT / "benchmarks" / "memory.py"


def _memory():
    return load_script("benchmarks/memory.py", "memory_benchmark")


def test_variants_skip_accumulations_that_do_not_divide_the_batch():
    assert _memory().variants(6, [2, 3, 4]) == [(1, False), (2, False), (3, False),
                                                 (1, True), (2, True), (3, True)]
    assert _memory().variants(4, [4], checkpointing=False) == [(1, False), (4, False)]


def test_tiny_run_reports_every_variant_with_the_same_loss(tmp_path):
    out = tmp_path / "memory.json"
    md = tmp_path / "memory.md"
    cmd = [sys.executable, str(SCRIPT), "--device", "cpu", "--threads", "1", "--width", "64", "--layers", "2",
           "--global-size", "64", "--local-size", "32", "--batches", "4", "--accum", "2", "--steps", "1",
           "--json", str(out), "--markdown", str(md)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    rows = json.loads(out.read_text())["rows"]
    assert {(r["accum_steps"], r["grad_ckpt"]) for r in rows} == {(1, False), (2, False), (1, True), (2, True)}
    for r in rows:
        assert r["method"] == "cosmos" and r["batch"] == 4 and r["micro_batch"] == 4 // r["accum_steps"]
        for key in ("s_per_step", "samples_per_s", "step_peak_mib", "total_peak_mib", "step_ratio", "loss0"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)
        assert r["total_peak_mib"] > r["step_peak_mib"]
    plain = next(r for r in rows if r["accum_steps"] == 1 and not r["grad_ckpt"])
    assert plain["step_ratio"] == 1.0
    for r in rows:
        assert r["loss0"] == pytest.approx(plain["loss0"], abs=1e-4), r
    assert md.read_text().count("\n| cosmos | 4 |") == 4
