"""The training loop (reference ``train.py``): objective -> sum -> backward -> EMA -> step -> clamp -> finite check.

One step, in order (reference 5 and 6):

1. ``lr[step]`` is set on every param group; the objective returns named ``*_loss`` terms, summed;
2. ``backward`` (through the GradScaler under fp16), in micro-batches with exact gradient caching when
   ``train.accum_steps > 1`` (:mod:`cosmos.training.accumulation`);
3. a non-finite total raises :class:`NonFiniteLossError` naming the step and every term. The check reads the
   device once per ``log_every`` steps and before every checkpoint (:meth:`Trainer.check_steps`), not on every
   step: a host sync per step would stall a GPU's queue. A non-finite step is therefore never saved;
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
from cosmos.training.accumulation import GradCache
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
    ``accumulation``: a :class:`~cosmos.training.accumulation.GradCache` (``train.accum_steps > 1``), or None.
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
    accumulation: GradCache | None = None
    position: Position = field(default_factory=Position)
    stopped: bool = False
    bad_samples: dict[int, int] = field(default_factory=dict)
    _unchecked: list[tuple[int, int, dict[str, torch.Tensor]]] = field(default_factory=list, repr=False)

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
        """One optimizer step on a loader ``batch`` (moved with :func:`batch_to`), checked at once; returns the
        loss terms and ``loss`` as floats."""
        self.step_on_device(batch_to(batch, self.device))
        return self.check_steps()

    def step_on_device(self, batch: dict[str, Any]) -> None:
        """One optimizer step on ``batch`` without a host synchronisation (:meth:`check_steps` reads it later).

        With :attr:`accumulation` the forward and backward run in micro-batches with gradient caching
        (:class:`~cosmos.training.accumulation.GradCache`, exact); otherwise in one pass.
        """
        step = self.position.step
        set_lr(self.optimizer, float(self.lr[step]))
        self.optimizer.zero_grad(set_to_none=True)
        if self.accumulation is not None:
            terms = self.accumulation.backward(self.student, self.teacher, self.objective, batch, step, self.precision)
        else:
            with self.precision.autocast():
                terms = self.objective(self.student, self.teacher, batch, step)
            self.precision.backward(sum(terms.values()))
            terms = {k: v.detach() for k, v in terms.items()}
        optimizer_step = self.precision.step(self.optimizer)
        if self.teacher is None:
            optimizer_step()
        else:
            step_with_ema(optimizer_step, self.teacher, self.student, float(self.momentum[step]), self.placement)
        clamp_logit_scales([self.student] + ([self.teacher.module] if self.teacher is not None else []))
        self._unchecked.append((step, self.position.epoch, terms))

    def check_steps(self) -> dict[str, float]:
        """Read the steps run since the last check (one host sync): raise :class:`NonFiniteLossError` naming the
        first step whose summed loss is NaN or infinite, with every term; else the last step's terms as floats.

        The loop calls it at every ``log_every``, before every checkpoint and at a stop, so a non-finite step
        is never saved: the last good checkpoint stays the newest.
        """
        if not self._unchecked:
            return {}
        steps, epochs, pending = zip(*self._unchecked)
        self._unchecked = []
        names = list(pending[0])
        values = torch.stack([torch.stack([terms[k].float() for k in names]) for terms in pending]).cpu()
        totals = [sum(row[k] for k in range(len(names))) for row in values]
        for step, epoch, row, total in zip(steps, epochs, values.tolist(), totals):
            if not torch.isfinite(total):
                detail = ", ".join(f"{k}={v:.6g}" for k, v in zip(names, row))
                raise NonFiniteLossError(f"non-finite loss at step {step} (epoch {epoch}): "
                                         f"loss={float(total):.6g} = {detail}; {_NON_FINITE_FIX}")
        return {**dict(zip(names, values[-1].tolist())), "loss": float(totals[-1])}

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
                self.step_on_device(batch_to(batch, self.device))
                pos.step, pos.batches = pos.step + 1, pos.batches + 1
                seen += self.loader.batch * self.loader.world
                if self.progress is not None:
                    self.progress(1)
                if self.log is not None and (pos.step % self.log_every == 0 or pos.step == self.total_steps):
                    metrics = self.check_steps()  # the only host sync of a step (house style: log_every)
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
                    self.check_steps()
                    return pos
        self.check_steps()
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
        self.check_steps()  # never save the result of a non-finite step
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
