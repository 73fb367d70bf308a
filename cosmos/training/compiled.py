"""``train.compile``: ``torch.compile`` of the student's and the teacher's forward (reference ``--torchcompile``).

The compiled callable replaces the module's ``__call__`` in place (``nn.Module.compile``'s mechanism), so
parameter names, the state dict, the EMA pairing (:mod:`cosmos.teacher.ema`) and checkpoints stay exactly those
of the eager model, and DDP wraps the compiled module as it wraps the eager one. Both towers, the
cross-attention and SiLC's head are inside the forward; the losses stay eager (a few small matmuls).

One input stays out: the captions' host EOT ends (``text_ends``, :func:`cosmos.models.towers.text_forward`).
Dynamo guards a compiled frame on every element of a list argument, and at the default batch (32 x 8 caption
rows) torch 2.14's guard builder fails on the expression ("too many nested parentheses"). Without it the
text tower reads the ends from the token ids inside the compiled forward (one host read per text forward, a
graph break), and the ``model.trim_text`` buckets give the text tower a few shapes, each compiled once
(``dynamic=None`` marks a dimension dynamic after its first change). Off by default: ``docs/training.md``
gives the measured effect on the 2-core CPU.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["compile_models"]


def compile_models(student: nn.Module, teacher: Any = None) -> None:
    """Compile ``student`` (a bare :class:`~cosmos.models.CosmosCLIP`, before any DDP wrap) and the teacher's
    module (an :class:`~cosmos.teacher.EMATeacher`, made before compiling) in place."""
    if isinstance(student, nn.parallel.DistributedDataParallel):
        raise ValueError("compile the bare student before wrapping it in DDP (cosmos.training.pretrain does)")
    _compile(student)
    if teacher is not None:
        _compile(teacher.module)


def _compile(module: nn.Module) -> None:
    compiled = torch.compile(module._call_impl)

    def call(*args: Any, text_ends: Any = None, **kwargs: Any) -> Any:
        return compiled(*args, **kwargs)

    module._compiled_call_impl = call
