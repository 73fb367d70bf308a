"""``train.compile``: ``torch.compile`` of the student's and the teacher's forward (reference ``--torchcompile``).

``nn.Module.compile`` compiles a module's ``__call__`` in place, so parameter names, the state dict, the EMA
pairing (:mod:`cosmos.teacher.ema`) and checkpoints stay exactly those of the eager model, and DDP wraps the
compiled module as it wraps the eager one. Both towers, the cross-attention and SiLC's head are inside the
forward; the losses stay eager (they are a few small matmuls). The caption-length buckets of
``model.trim_text`` give the text tower a few input shapes, which dynamo compiles once each (``dynamic=None``
marks a dimension dynamic after its first change). Off by default: on a 2-core CPU the compile time exceeds the
run's (``docs/training.md`` gives the measured effect); on a GPU it pays over a long run.
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["compile_models"]


def compile_models(student: nn.Module, teacher: Any = None) -> None:
    """Compile ``student`` (a bare :class:`~cosmos.models.CosmosCLIP`, before any DDP wrap) and the teacher's
    module (an :class:`~cosmos.teacher.EMATeacher`, made before compiling) in place."""
    if isinstance(student, nn.parallel.DistributedDataParallel):
        raise ValueError("compile the bare student before wrapping it in DDP (cosmos.training.pretrain does)")
    student.compile()
    if teacher is not None:
        teacher.module.compile()
