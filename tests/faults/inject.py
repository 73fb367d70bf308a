"""Run ``stages/pretrain.py`` in the current folder with one fault armed (the child side of the harness).

``python -m tests.faults.inject FAULT`` where FAULT is ``none`` or ``<kind>:<n>``, striking at the n-th call
of the write it names:

- ``ckpt-kill:n``: the n-th checkpoint ``torch.save`` writes half its bytes to the temp file, then the process
  SIGKILLs itself (a kill inside a checkpoint write);
- ``ckpt-done-kill:n``: SIGKILL right after the n-th checkpoint is complete and renamed;
- ``ckpt-enospc:n``: the n-th checkpoint write fails with ``OSError(ENOSPC)`` after half its bytes (a full disk);
- ``tsv-kill:n``: the n-th dvclive metric row is written without its end (half the value), then SIGKILL;
- ``summary-kill:n``: the n-th dvclive ``metrics.json`` is written half, then SIGKILL;
- ``nan-loss:n``: from the n-th call of the training objective on, its first loss term is NaN (a diverged run).

Nothing here touches the project's code: the faults are monkeypatched onto torch and dvclive before the
stage script runs, exactly as a user runs it (``python stages/pretrain.py``).
"""

from __future__ import annotations

import errno
import io
import json
import os
import runpy
import signal
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
KINDS = ("ckpt-kill", "ckpt-done-kill", "ckpt-enospc", "tsv-kill", "summary-kill", "nan-loss")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class _Nth:
    """Counts calls; true exactly at the n-th."""

    def __init__(self, n: int):
        self.n, self.calls = n, 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.calls == self.n


def arm(fault: str) -> None:
    """Patch torch / dvclive so that ``fault`` happens; ``none`` patches nothing."""
    if fault == "none":
        return
    kind, _, n = fault.partition(":")
    if kind not in KINDS or not n.isdigit() or int(n) < 1:
        raise SystemExit(f"unknown fault {fault!r}: expected none or one of {KINDS} as <kind>:<n>, n >= 1")
    strike = _Nth(int(n))
    if kind.startswith("ckpt"):
        _arm_checkpoint(kind, strike)
    elif kind == "nan-loss":
        _arm_loss(strike)
    else:
        _arm_dvclive(kind, strike)


def _arm_checkpoint(kind: str, strike: _Nth) -> None:
    import torch

    import cosmos.models.checkpoint_io as checkpoint_io

    real_save, real_replace = torch.save, os.replace

    def save(obj, f, *args, **kwargs):
        if kind == "ckpt-done-kill" or not strike():
            return real_save(obj, f, *args, **kwargs)
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        f.write(buf.getvalue()[: buf.tell() // 2])
        f.flush()
        os.fsync(f.fileno())
        if kind == "ckpt-kill":
            _die()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def replace(src, dst, *args, **kwargs):
        real_replace(src, dst, *args, **kwargs)
        if kind == "ckpt-done-kill" and Path(dst).name.startswith("step-") and strike():
            _die()

    torch.save = save
    checkpoint_io.os.replace = replace  # the module's `os` is the global one: this patches os.replace itself


def _arm_loss(strike: _Nth) -> None:
    import cosmos.training.pretrain as pretrain

    real_build = pretrain.build_trainer

    def build_trainer(*args, **kwargs):
        trainer = real_build(*args, **kwargs)
        objective = trainer.objective

        def poisoned(*a, **k):
            terms = objective(*a, **k)
            if strike() or strike.calls > strike.n:
                first = next(iter(terms))
                terms = {**terms, first: terms[first] * float("nan")}
            return terms

        trainer.objective = poisoned
        return trainer

    pretrain.build_trainer = build_trainer


def _arm_dvclive(kind: str, strike: _Nth) -> None:
    import dvclive.live
    import dvclive.plots.metric

    if kind == "tsv-kill":
        real_dump = dvclive.plots.metric.Metric.dump

        def dump(self, val, **kwargs):
            if not strike() or not self.output_path.exists():
                return real_dump(self, val, **kwargs)
            with open(self.output_path, "a", encoding="utf-8") as fobj:
                fobj.write(f"{self.step}\t{str(val)[: max(1, len(str(val)) // 2)]}")
                fobj.flush()
            _die()

        dvclive.plots.metric.Metric.dump = dump
    else:
        real_json = dvclive.live.dump_json

        def dump_json(content, output_file, *args, **kwargs):
            if not strike():
                return real_json(content, output_file, *args, **kwargs)
            text = json.dumps(content, default=float)
            Path(output_file).write_text(text[: len(text) // 2], encoding="utf-8")
            _die()

        dvclive.live.dump_json = dump_json


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python -m tests.faults.inject FAULT   (run in a project folder)")
    arm(argv[0])
    sys.argv = [str(REPO_ROOT / "stages" / "pretrain.py")]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
