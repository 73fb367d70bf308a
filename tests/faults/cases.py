"""The fault cases, each a function that breaks a run, resumes it, and returns one row of the table.

Every case runs in its own project (:func:`tests.faults.harness.make_project`) on shared data and ends
with :func:`~tests.faults.harness.outcome` against an uninterrupted reference project. A case asserts what
must be true on the way (the exit status, what is left on disk, the line in the log) and raises
``AssertionError`` naming what did not hold; ``benchmarks/fault_injection.py`` prints the rows, the
tests assert them.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.faults.harness import CKPTS, Run, checkpoints, fresh, make_project, outcome, resume, run

__all__ = ["Row", "TARGETED", "random_signals"]


@dataclass
class Row:
    """One line of the fault table."""

    case: str
    trials: int
    identical: int       # final student, teacher and optimizer tensors equal to the uninterrupted run's
    curves: int          # learning curve (runs/curves/base.json) equal to the uninterrupted run's
    detail: str

    def passed(self) -> bool:
        return self.identical == self.trials == self.curves


def _log(runs: list[Run]) -> str:
    return "\n".join(r.stdout + r.stderr for r in runs)


def _finish(project: Path, reference: Path, broken: Run, case: str, detail: str) -> Row:
    runs = resume(project)
    result = outcome(project, reference)
    assert result.identical_weights, f"{case}: weights differ after resume: {result.differing}"
    return Row(case, 1, int(result.identical_weights), int(result.identical_curve),
               f"{detail}; resumed in {len(runs)} run(s)")


def kill_in_checkpoint_write(work: Path, data: Path, reference: Path) -> Row:
    project = make_project(work / "ckpt-kill", data)
    broken = run(project, "ckpt-kill:2")
    assert broken.returncode == -signal.SIGKILL, broken.stderr[-2000:]
    debris = [n for n in checkpoints(project) if n.endswith(".tmp")]
    assert debris and "step-00000002.pt" in checkpoints(project), checkpoints(project)
    row = _finish(project, reference, broken, "SIGKILL inside a checkpoint write",
                  f"left {debris[0]} (half written) beside step-00000002.pt")
    assert not [n for n in checkpoints(project) if n.endswith(".tmp")], "the temp file was not swept"
    return row


def corrupt_newest(work: Path, data: Path, reference: Path) -> Row:
    project = make_project(work / "corrupt", data)
    broken = run(project, "ckpt-done-kill:3")
    assert broken.returncode == -signal.SIGKILL, broken.stderr[-2000:]
    newest = project / CKPTS / "step-00000006.pt"
    assert newest.exists(), checkpoints(project)
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    runs = resume(project)
    said = [line for line in _log(runs).splitlines() if "skipped 1 newer checkpoint" in line]
    assert said and "resuming from step-00000004.pt" in said[0], _log(runs)[-2000:]
    result = outcome(project, reference)
    assert result.identical_weights, result.differing
    return Row("corrupted newest checkpoint (truncated to half)", 1, 1, int(result.identical_curve),
               "log: '" + said[0].split(" (")[0].removeprefix("pretrain: ") + "', resumed from step-00000004.pt")


def full_disk(work: Path, data: Path, reference: Path) -> Row:
    project = make_project(work / "enospc", data)
    broken = run(project, "ckpt-enospc:2")
    lines = [line for line in broken.stderr.splitlines() if line.startswith("stage pretrain failed")]
    assert broken.returncode == 1 and len(lines) == 1, broken.stderr[-2000:]
    assert "No space left on device" in lines[0] and "step-00000002.pt is intact" in lines[0], lines[0]
    assert "Traceback" not in broken.stderr, broken.stderr[-2000:]
    assert checkpoints(project) == ["step-00000002.pt"], checkpoints(project)
    from cosmos.models.checkpoint_io import load_checkpoint_file

    assert load_checkpoint_file(project / CKPTS / "step-00000002.pt")["step"] == 2
    return _finish(project, reference, broken, "full disk (ENOSPC) during a checkpoint write",
                   "exit 1, one line: '" + lines[0][:70] + "...', step-00000002.pt intact, no temp file")


def _kill_in_dvclive(kind: str, label: str, n: int) -> Callable[[Path, Path, Path], Row]:
    def case(work: Path, data: Path, reference: Path) -> Row:
        project = make_project(work / kind, data)
        broken = run(project, f"{kind}:{n}")
        assert broken.returncode == -signal.SIGKILL, broken.stderr[-2000:]
        runs = resume(project)
        said = [line for line in _log(runs).splitlines() if "dvclive log brought back" in line]
        assert said, _log(runs)[-2000:]
        result = outcome(project, reference)
        assert result.identical_weights, result.differing
        assert result.identical_curve, f"{label}: the learning curve differs after resume"
        return Row(label, 1, 1, 1, "log: '" + said[0].removeprefix("pretrain: ")[:90] + "...'")
    case.__name__ = kind
    return case


TARGETED: list[Callable[[Path, Path, Path], Row]] = [
    kill_in_checkpoint_write,
    _kill_in_dvclive("tsv-kill", "SIGKILL inside a dvclive metric row", 45),
    _kill_in_dvclive("summary-kill", "SIGKILL inside dvclive's metrics.json", 7),
    full_disk,
    corrupt_newest,
]


def random_signals(work: Path, data: Path, reference: Path, *, trials: int, sig: signal.Signals, seed: int,
                   span_s: float) -> Row:
    """``trials`` runs each sent ``sig`` at a uniform random moment in ``(0, span_s)`` s, then resumed."""
    rng = random.Random(seed)
    identical = curves = early = 0
    for i in range(trials):
        project = make_project(fresh(work / f"{sig.name}-{i}") / "p", data)
        broken = run(project, sig=sig, after_s=rng.uniform(0.0, span_s))
        early += broken.finished
        if not broken.finished:
            assert broken.returncode in (-sig, 1), f"run {i}: exit {broken.returncode}\n{broken.stderr[-2000:]}"
            resume(project)
        result = outcome(project, reference)
        identical += result.identical_weights
        curves += result.identical_curve
    what = "preemption: SIGTERM, then the same command (a Slurm requeue)" if sig == signal.SIGTERM else "SIGKILL"
    return Row(f"{what} at a random moment", trials, identical, curves,
               f"moments uniform in (0, {span_s:.0f} s), seed {seed}; {early} run(s) finished before the signal")
