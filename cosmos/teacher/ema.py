"""EMA teacher for self-distillation (reference section 5, ``main.py:279-287`` and ``train.py:185-193``).

The teacher is a deep copy of the student made before DDP wrapping and before any training, with every
parameter frozen. Each step it moves towards the student, ``theta_t <- m * theta_t + (1 - m) * theta_s``,
over *all* parameters (the reference covers all 323 tensors of a COSMOS ViT-B/16, including the
cross-attention modules and both logit scales the teacher never uses).

Where the update sits in the step is a real difference between implementations:

- ``EMAPlacement.REFERENCE`` (default): after ``backward`` and before ``optimizer.step()``, as the COSMOS
  code does. The teacher absorbs the student's *pre-update* weights, so it lags one step more.
- ``EMAPlacement.DINO``: after ``optimizer.step()``, as DINO and most EMA implementations do.
"""

from __future__ import annotations

import copy
import enum
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

# Wrapper prefixes that name the same tensor differently: DDP/DP (``module.``) and torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class EMAPlacement(str, enum.Enum):
    """Where the EMA update runs relative to ``optimizer.step()``."""

    REFERENCE = "reference"
    DINO = "dino"


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, (DistributedDataParallel, DataParallel)) else model


def _strip_prefixes(name: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, stripped = name[len(prefix):], True
    return name


def _named(items: Iterator[tuple[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {_strip_prefixes(name): tensor for name, tensor in items}


class EMATeacher:
    """A frozen, always-eval copy of the student, updated by name-matched EMA.

    Calling the teacher runs the copy's ``forward``. It is deliberately not an ``nn.Module``, so it can
    never be registered into the student or its optimizer by accident; :meth:`state_dict` has the same
    keys as the student's (without ``module.``), i.e. the reference checkpoint's ``teacher`` entry.
    """

    def __init__(self, student: nn.Module):
        self.module = copy.deepcopy(_unwrap(student))
        self.module.requires_grad_(False)
        self.module.eval()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    forward = __call__

    @torch.no_grad()
    def update(self, student: nn.Module, momentum: float) -> None:
        """``theta_t <- m * theta_t + (1 - m) * theta_s`` for every parameter; buffers are copied.

        Raises if the student's parameter names (``module.`` stripped) differ from the teacher's, which
        would otherwise silently pair the wrong tensors as ``zip(parameters())`` does.
        """
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"EMA momentum must lie in [0, 1], got {momentum}")
        student_params = _named(student.named_parameters())
        teacher_params = dict(self.module.named_parameters())
        if student_params.keys() != teacher_params.keys():
            missing = sorted(teacher_params.keys() - student_params.keys())[:5]
            extra = sorted(student_params.keys() - teacher_params.keys())[:5]
            raise ValueError(f"student and teacher parameters differ: missing {missing}, unexpected {extra}")
        teacher_list = list(teacher_params.values())
        student_list = [student_params[name].detach() for name in teacher_params]
        # The reference's mul_(m).add_((1 - m) * theta_s), as two foreach kernels over all tensors: no per-tensor
        # launch and no temporary the size of the token embedding (equal to float rounding, tests/teacher).
        torch._foreach_mul_(teacher_list, momentum)
        torch._foreach_add_(teacher_list, student_list, alpha=1.0 - momentum)
        student_buffers = _named(student.named_buffers())
        for name, teacher_buffer in self.module.named_buffers():
            if name in student_buffers:
                teacher_buffer.copy_(student_buffers[name])

    def to(self, *args: Any, **kwargs: Any) -> "EMATeacher":
        self.module.to(*args, **kwargs)
        return self

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.module.parameters()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True) -> Any:
        state_dict = {_strip_prefixes(name): tensor for name, tensor in state_dict.items()}
        result = self.module.load_state_dict(state_dict, strict=strict)
        self.module.requires_grad_(False)
        return result


def step_with_ema(optimizer_step: Callable[[], Any], teacher: EMATeacher, student: nn.Module, momentum: float,
                  placement: EMAPlacement | str = EMAPlacement.REFERENCE) -> None:
    """Run ``optimizer_step()`` (e.g. ``scaler.step(opt)``) and the EMA update in the order ``placement`` says.

    Call after ``backward``. ``REFERENCE`` updates the teacher first (pre-step student weights), ``DINO``
    after the step.
    """
    placement = EMAPlacement(placement)
    if placement is EMAPlacement.REFERENCE:
        teacher.update(student, momentum)
        optimizer_step()
    else:
        optimizer_step()
        teacher.update(student, momentum)
