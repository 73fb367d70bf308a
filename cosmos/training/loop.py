"""The training loop (reference ``train.py``): objective -> sum -> finite check -> backward -> EMA -> step -> clamp.

One step, in order (reference 5 and 6):

1. ``lr[step]`` is set on every param group; the objective returns named ``*_loss`` terms, summed;
2. a non-finite total raises :class:`NonFiniteLossError` naming the step and every term;
3. ``backward`` (through the GradScaler under fp16);
4. the EMA teacher moves with ``momentum[step]``, before ``optimizer.step()`` (``reference``) or after it
   (``dino``), via :func:`~cosmos.teacher.ema.step_with_ema`;
5. both logit scales of student and teacher are clamped to ``[0, ln 100]``.

Schedules are arrays indexed by the global step and travel in every checkpoint with the RNG states and
the data position, so a run killed anywhere resumes on exactly the same values (house style 7).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from cosmos.models.checkpoint_io import strip_module_prefix
from cosmos.teacher.ema import EMATeacher, step_with_ema
from cosmos.training.checkpoint import CheckpointDir, capture_rng, restore_rng
from cosmos.training.data import TrainLoader, batch_to
from cosmos.training.optim import clamp_logit_scales, set_lr
from cosmos.training.precision import Precision

__all__ = ["NonFiniteLossError", "Position", "Trainer", "config_fingerprint"]

LogFn = Callable[[int, dict[str, float]], None]


class NonFiniteLossError(RuntimeError):
    """The summed loss is NaN or infinite; the message names the step and every loss term."""


_NON_FINITE_FIX = ("the last good checkpoint is kept: lower optim.lr or raise optim.warmup_steps, or use "
                   "train.precision=fp32 or bf16 if fp16 overflowed, then re-run (train.resume=auto resumes)")


def config_fingerprint(config: dict[str, Any]) -> str:
    """A short stable hash of the config that shapes a run (resume refuses another config's checkpoint)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Position:
    """Where a run stands: optimizer steps done, the epoch in progress and its batches consumed."""

    step: int = 0
    epoch: int = 0
    batches: int = 0


@dataclass
class Trainer:
    """Everything one run needs, already built; :meth:`fit` trains until the schedules end or ``max_steps``.

    ``lr`` and ``momentum`` are float64 arrays of length ``epochs * loader.batches_per_epoch``.
    ``objective(student, teacher_or_None, batch, step)`` returns a dict of ``*_loss`` tensors.
    """

    student: nn.Module
    teacher: EMATeacher | None
    objective: Callable[..., dict[str, torch.Tensor]]
    loader: TrainLoader
    optimizer: torch.optim.Optimizer
    precision: Precision
    lr: np.ndarray
    momentum: np.ndarray
    placement: str
    epochs: int
    name: str
    checkpoints: CheckpointDir | None = None
    checkpoint_every: int = 0
    max_steps: int = 0
    log_every: int = 1
    fingerprint: str = ""
    log: LogFn | None = None
    progress: Callable[[int], Any] | None = None
    should_stop: Callable[[], bool] | None = None
    position: Position = field(default_factory=Position)
    stopped: bool = False
    bad_samples: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        total = self.epochs * self.loader.batches_per_epoch
        for key in ("lr", "momentum"):
            if len(getattr(self, key)) != total:
                raise ValueError(f"{key} schedule has {len(getattr(self, key))} steps, the run has {total}")
        self.device = next(self.student.parameters()).device

    @property
    def total_steps(self) -> int:
        return len(self.lr)

    # ------------------------------------------------------------------------------------------ step

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One optimizer step on ``batch``; returns the loss terms and ``loss`` (their sum) as floats."""
        step = self.position.step
        set_lr(self.optimizer, float(self.lr[step]))
        with self.precision.autocast():
            try:
                terms = self.objective(self.student, self.teacher, batch, step)
            except FloatingPointError as err:  # the objective's own per-term check
                raise NonFiniteLossError(f"epoch {self.position.epoch}: {err}; {_NON_FINITE_FIX}") from err
        total = sum(terms.values())
        if not torch.isfinite(total):
            detail = ", ".join(f"{k}={v.item():.6g}" for k, v in terms.items())
            raise NonFiniteLossError(f"non-finite loss at step {step} (epoch {self.position.epoch}): "
                                     f"loss={total.item():.6g} = {detail}; {_NON_FINITE_FIX}")
        self.optimizer.zero_grad(set_to_none=True)
        self.precision.backward(total)
        optimizer_step = self.precision.step(self.optimizer)
        if self.teacher is None:
            optimizer_step()
        else:
            step_with_ema(optimizer_step, self.teacher, self.student, float(self.momentum[step]), self.placement)
        clamp_logit_scales([self.student] + ([self.teacher.module] if self.teacher is not None else []))
        return {**{k: v.item() for k, v in terms.items()}, "loss": total.item()}

    # ------------------------------------------------------------------------------------------- fit

    def fit(self) -> Position:
        """Train from :attr:`position` to the end (or ``max_steps``); checkpoints per ``checkpoint_every`` and epoch.

        ``should_stop`` (the preemption request, :mod:`cosmos.training.preemption`) is asked after every step;
        when it says so the step just done is checkpointed, :attr:`stopped` is set and ``fit`` returns.
        """
        pos = self.position
        while pos.epoch < self.epochs:
            start, seen = time.perf_counter(), 0
            for batch in self.loader.epoch(pos.epoch, skip_batches=pos.batches):
                self.bad_samples[batch.pop("worker")] = batch.pop("bad_samples")
                metrics = self.train_step(batch_to(batch, self.device))
                pos.step, pos.batches = pos.step + 1, pos.batches + 1
                seen += self.loader.batch * self.loader.world
                if self.progress is not None:
                    self.progress(1)
                if self.log is not None and (pos.step % self.log_every == 0 or pos.step == self.total_steps):
                    self.log(pos.step, {**metrics, **self._scalars(pos.step - 1),
                                        "samples_per_s": seen / (time.perf_counter() - start)})
                saved = True
                if pos.batches == self.loader.batches_per_epoch:
                    pos.epoch, pos.batches = pos.epoch + 1, 0
                    self.save()
                elif self.checkpoint_every and pos.step % self.checkpoint_every == 0:
                    self.save()
                else:
                    saved = False
                # A requested stop (preemption) is a collective on every rank: asked at every boundary, also the last.
                stop = self.should_stop is not None and self.should_stop()
                if stop and pos.step < self.total_steps:
                    self.stopped = True
                if self.stopped or (self.max_steps and pos.step >= self.max_steps):
                    if not saved:
                        self.save()
                    return pos
        return pos

    def _scalars(self, step: int) -> dict[str, float]:
        student = self.student.module if hasattr(self.student, "module") else self.student
        out = {"lr": float(self.lr[step]), "momentum": float(self.momentum[step]),
               "temperature": float(torch.exp(-student.logit_scale.detach()))}
        if hasattr(student, "distill_logit_scale"):
            out["distill_temperature"] = float(torch.exp(-student.distill_logit_scale.detach()))
        return out

    # ------------------------------------------------------------------------------------ checkpoint

    def state(self) -> dict[str, Any]:
        """The non-weight parts of a checkpoint (``extra`` of the reference layout)."""
        extra = {
            "data": {"epoch": self.position.epoch, "batches": self.position.batches},
            "schedules": {"lr": torch.from_numpy(self.lr.copy()), "momentum": torch.from_numpy(self.momentum.copy())},
            "rng": capture_rng(),
            "fingerprint": self.fingerprint,
        }
        if isinstance(self.objective, nn.Module):  # e.g. SiLC's DINO centre buffer
            extra["objective"] = self.objective.state_dict()
        return extra

    def save(self) -> None:
        if self.checkpoints is None:
            return
        student = self.student.state_dict()
        self.checkpoints.save(
            self.position.step, epoch=self.position.epoch, name=self.name, student=student,
            teacher=self.teacher.state_dict() if self.teacher is not None else student,
            optimizer=self.optimizer.state_dict(), scaler=self.precision.state_dict(), extra=self.state(),
        )

    def load(self, ckpt: dict[str, Any]) -> None:
        """Restore weights, optimizer, scaler, schedules, RNG and data position from a checkpoint dict."""
        # A DDP run saves ``module.``-prefixed student keys (reference 2.1); load into the bare model either way.
        bare = self.student.module if isinstance(self.student, nn.parallel.DistributedDataParallel) else self.student
        bare.load_state_dict(strip_module_prefix(ckpt["student"]), strict=True)
        if self.teacher is not None:
            self.teacher.load_state_dict(ckpt["teacher"], strict=True)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.precision.load_state_dict(ckpt.get("scaler"))
        if isinstance(self.objective, nn.Module) and "objective" in ckpt:
            self.objective.load_state_dict(ckpt["objective"])
        lr, momentum = ckpt["schedules"]["lr"].numpy(), ckpt["schedules"]["momentum"].numpy()
        if len(lr) != self.total_steps:
            raise ValueError(f"checkpoint schedules have {len(lr)} steps, this run has {self.total_steps}")
        self.lr, self.momentum = lr, momentum
        restore_rng(ckpt["rng"])
        self.position = Position(step=int(ckpt["step"]), epoch=int(ckpt["data"]["epoch"]),
                                 batches=int(ckpt["data"]["batches"]))
