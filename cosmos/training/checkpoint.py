"""Training checkpoints: the reference layout plus everything an exact resume needs, written atomically.

Top level (reference 2.1): ``epoch`` (completed epochs), ``name``, ``student``, ``teacher``, ``optimizer``
and ``scaler`` (fp16 only). Extra entries: ``step`` (optimizer steps done), ``data`` (``{"epoch",
"batches"}``: the epoch in progress and the batches of it consumed), ``schedules`` (``lr``, ``momentum``:
float64 tensors indexed by step), ``rng`` (torch, python ``random`` and numpy states) and ``fingerprint``
(a hash of the config that shapes the run; ``resume=auto`` refuses a checkpoint of another config).
A run without a teacher (the CLIP baseline) stores the student under ``teacher`` too, so readers that
evaluate the teacher (reference segmentation) still work.

Files are ``step-00000012.pt`` in one folder (``final.pt`` once the run has finished), each written by
``export_reference_checkpoint`` (temp file, fsync, rename): a kill mid-write leaves the previous file
intact. The newest ``keep`` files stay; resume takes the newest one that loads and falls back to the one
before if it does not.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cosmos.models.checkpoint_io import CheckpointError, export_reference_checkpoint, load_checkpoint_file

__all__ = ["CheckpointDir", "capture_rng", "restore_rng"]

_PATTERN = re.compile(r"^step-(\d{8})\.pt$")
FINAL = "final.pt"


def capture_rng() -> dict[str, Any]:
    """The process's CPU RNG states, as tensors and plain containers (loadable with ``weights_only=True``)."""
    version, state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    out = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "state": torch.tensor(state, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointDir:
    """A folder of ``step-*.pt`` checkpoints; the newest ``keep`` are kept."""

    def __init__(self, folder: str | Path, keep: int = 2):
        if keep < 1:
            raise ValueError(f"train.keep_checkpoints={keep} must be >= 1")
        self.folder, self.keep = Path(folder), keep

    def paths(self) -> list[Path]:
        """Checkpoint files, oldest first (``final.pt``, when present, last)."""
        if not self.folder.is_dir():
            return []
        steps = sorted(p for p in self.folder.iterdir() if _PATTERN.match(p.name))
        final = self.folder / FINAL
        return steps + ([final] if final.exists() else [])

    def finalize(self) -> Path:
        """Rename the newest checkpoint to ``final.pt`` (the stable name later stages read); drop the others."""
        paths = self.paths()
        if not paths:
            raise CheckpointError(f"no checkpoint in {self.folder} to finalize")
        final = self.folder / FINAL
        os.replace(paths[-1], final)
        for old in paths[:-1]:
            if old != final:
                old.unlink(missing_ok=True)
        return final

    def save(self, step: int, *, epoch: int, name: str, student: dict, teacher: dict, optimizer: dict,
             scaler: dict | None, extra: dict[str, Any]) -> Path:
        try:
            path = export_reference_checkpoint(
                self.folder / f"step-{step:08d}.pt", student, teacher, epoch=epoch, name=name,
                optimizer_state=optimizer, scaler_state=scaler, extra={"step": step, **extra},
            )
        except OSError as err:  # e.g. a full disk: the temp file is gone and the previous checkpoint untouched
            previous = self.latest()
            kept = f"{previous.name} is intact and train.resume=auto resumes from it" if previous else \
                "no earlier checkpoint exists, so the run restarts from step 0"
            raise CheckpointError(
                f"could not write the step-{step} checkpoint to {self.folder}: {err.strerror or err}; {kept}. "
                "Free space there (or give the run another output folder) and run it again"
            ) from err
        for old in [p for p in self.paths() if p.name != FINAL][:-self.keep]:
            old.unlink(missing_ok=True)
        return path

    def sweep_debris(self) -> list[str]:
        """Delete the temp files of writes that a kill interrupted (``.step-*.pt.*.tmp``); returns their names.

        Only the main rank calls it, before training, so no write of this run can be in flight.
        """
        if not self.folder.is_dir():
            return []
        debris = sorted(p for p in self.folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))
        for path in debris:
            path.unlink(missing_ok=True)
        return [p.name for p in debris]

    def discard_stale(self, fingerprint: str) -> list[str]:
        """Before a stage (re-)runs: keep only the unfinished checkpoints of this config; returns what went.

        A stage re-runs when its code, data or params changed, so ``final.pt`` and checkpoints of another
        config (fingerprint) are stale; a killed run's ``step-*.pt`` of the same config are what it resumes
        from. Unreadable files are left for :meth:`load_latest`, which falls back past them.
        """
        gone = self.sweep_debris()
        for path in self.paths():
            if path.name != FINAL:
                try:  # mmap: only the fingerprint is read, not gigabytes of tensors (load_latest reads them)
                    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
                    if ckpt.get("fingerprint") == fingerprint:
                        continue
                except Exception:  # noqa: BLE001 - judged, and reported, by load_latest
                    continue
            path.unlink(missing_ok=True)
            gone.append(path.name)
        return gone

    def latest(self) -> Path | None:
        paths = self.paths()
        return paths[-1] if paths else None

    def load_latest(self, fingerprint: str | None = None, report: Callable[[str], None] | None = None,
                    ) -> tuple[Path, dict[str, Any]] | None:
        """The newest checkpoint that loads (and matches ``fingerprint`` when given), or None if there is none.

        ``report`` is told, in one line, of every newer file that was skipped because it does not load.

        Raises:
            CheckpointError: checkpoints exist but none loads, or the newest is of another config.
        """
        paths = self.paths()
        errors = []
        for path in reversed(paths):
            try:
                ckpt = load_checkpoint_file(path)
            except Exception as err:  # a truncated or corrupt file: fall back to the previous one
                errors.append(f"{path.name}: {type(err).__name__}: {err}")
                continue
            if fingerprint is not None and ckpt.get("fingerprint") != fingerprint:
                raise CheckpointError(
                    f"{path} was written by a run with another config (fingerprint {ckpt.get('fingerprint')} != "
                    f"{fingerprint}); delete {self.folder} or set train.resume=none to start over"
                )
            if errors and report is not None:
                report(f"skipped {len(errors)} newer checkpoint(s) that do not load ({'; '.join(errors)}); "
                       f"resuming from {path.name}")
            return path, ckpt
        if errors:
            raise CheckpointError(f"no checkpoint in {self.folder} loads ({'; '.join(errors)}): delete the "
                                  "files named, or set train.resume=none to train from step 0")
        return None
