"""AdamW with the reference's weight-decay groups and logit-scale clamp (reference 6, ``main.py:373-392``).

Excluded from decay: parameters with ``ndim < 2`` or a name containing ``bn``, ``ln``, ``bias`` or
``logit_scale`` (215 tensors of a COSMOS ViT-B/16). Everything else is decayed (108 tensors), including
both positional embeddings, the projections, the token embedding and the cross-attention weights.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["LOGIT_SCALE_MAX", "build_optimizer", "clamp_logit_scales", "is_decayed", "param_groups", "set_lr"]

LOGIT_SCALE_MAX = math.log(100)  # the reference clamps ln(1/T) to [0, ln 100] after every step
_NO_DECAY_SUBSTRINGS = ("bn", "ln", "bias", "logit_scale")


def is_decayed(name: str, param: torch.Tensor) -> bool:
    """The reference ``exclude`` rule, negated: decay 2-D+ tensors whose name has none of bn/ln/bias/logit_scale."""
    return param.ndim >= 2 and not any(s in name for s in _NO_DECAY_SUBSTRINGS)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """``[{"params": no-decay, "weight_decay": 0}, {"params": decayed, "weight_decay": wd}]`` over trainable params."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (decay if is_decayed(name, param) else no_decay).append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def build_optimizer(model: nn.Module, *, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.98),
                    eps: float = 1e-8, fused: bool = False) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` (reference: lr 5e-4, betas (0.9, 0.98), eps 1e-8, wd 0.5).

    ``fused=True`` runs torch's single-kernel AdamW (CPU and CUDA): the same update, one pass over each
    parameter instead of about ten foreach passes with temporaries the size of the token embedding. It
    agrees with the default to float rounding (``tests/training/test_optim.py``).
    """
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=tuple(betas), eps=eps,
                             **({"fused": True} if fused else {}))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the same ``lr`` on every group (the reference ``assign_learning_rate``)."""
    for group in optimizer.param_groups:
        group["lr"] = lr


@torch.no_grad()
def clamp_logit_scales(models: Iterable[nn.Module]) -> None:
    """Clamp every ``*logit_scale`` parameter (``logit_scale``, ``distill_logit_scale``) to ``[0, ln 100]``."""
    for model in models:
        for name, param in model.named_parameters():
            if name.endswith("logit_scale"):
                param.clamp_(0, LOGIT_SCALE_MAX)
