"""Exact gradient accumulation by gradient caching (Gao et al., "Scaling Deep Contrastive Learning Batch Size
under Memory Limited Setup", 2021), for every method: the paper's global batch on fewer or smaller GPUs.

Summing the gradients of small batches is not COSMOS's objective: the CLIP and distillation terms compare every
sample with every other of the batch, and SiLC's DINO centre moves once per batch. The reference therefore
refuses accumulation for COSMOS (``train.py``: ``assert args.accum_freq == 1``). Gradient caching keeps the
objective exact, because everything before the loss is per-sample: the student's towers, the cross-attention
(each sample attends over its own tokens) and SiLC's head, and the teacher's forward. With ``n`` micro-batches
of ``m = B/n`` samples (``B`` the per-rank batch):

1. the teacher's targets, micro-batch by micro-batch under ``no_grad``, joined to ``[B, E]`` views;
2. the student's outputs ``z`` (features ``[V*m, ...]`` view-major, and the two exp'd temperatures), micro-batch
   by micro-batch without grad, joined to ``[V*B, ...]`` and made leaves;
3. the loss ``L(z)`` on the whole batch, as :meth:`Objective.loss_terms` computes it without accumulation, and
   ``dL/dz`` by one backward that stops at the leaves (SiLC's centre moves here, once);
4. each micro-batch again, with grad, back-propagated from its rows of ``dL/dz``:
   ``dL/dtheta = sum_i (dz_i/dtheta)^T dL/dz_i``. The temperatures' outputs are equal in every micro-batch, so
   only the last one carries their gradient: one copy, not ``n``.

Under DDP the first ``n-1`` backward passes run under ``no_sync`` and the last one all-reduces the accumulated
gradients, so a rank's gradient is exactly what it would be without accumulation, and DDP's mean keeps the
relation of tests/training/test_ddp_parity.py. The price is one extra student forward per step (about a third
more compute); the activation memory is that of one micro-batch. Random state is replayed for the second
forward of every micro-batch, so a stochastic layer would see the same draws twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from cosmos.training.precision import Precision

__all__ = ["GradCache", "split_batch"]


def split_batch(batch: Mapping[str, Any], parts: int) -> list[dict[str, Any]]:
    """``parts`` micro-batches of a collated batch, in sample order.

    ``images`` is a crop-major list of ``[B, 3, S, S]`` (each view is split by rows); ``texts [k*B, ctx]`` and
    ``text_ends [k*B]`` are caption-major (each of the ``k`` caption blocks is split). Raises unless ``parts``
    divides ``B``.
    """
    images = list(batch["images"])
    b = images[0].shape[0]
    if parts < 1 or b % parts:
        raise ValueError(f"train.accum_steps={parts} must divide the per-rank batch of {b} samples "
                         "(train.batch_size / world size); pick a divisor or change train.batch_size")
    m = b // parts

    def caption_rows(value: torch.Tensor, i: int) -> torch.Tensor:
        blocks = value.reshape(value.shape[0] // b, b, *value.shape[1:])
        return blocks[:, i * m:(i + 1) * m].reshape(-1, *value.shape[1:])

    micro = []
    for i in range(parts):
        part = {"images": [view[i * m:(i + 1) * m] for view in images]}
        for key in ("texts", "text_ends"):
            if batch.get(key) is not None:
                part[key] = caption_rows(batch[key], i)
        micro.append(part)
    return micro


def _join_rows(parts: list[torch.Tensor], batch: int) -> torch.Tensor:
    """Micro-batch outputs ``[V*m, ...]`` (view-major) -> ``[V*B, ...]`` view-major over the whole batch."""
    views = parts[0].shape[0] * len(parts) // batch
    blocks = [p.reshape(views, -1, *p.shape[1:]) for p in parts]
    return torch.cat(blocks, dim=1).reshape(-1, *parts[0].shape[1:])


def _rows(value: torch.Tensor, batch: int, parts: int, i: int) -> torch.Tensor:
    """Micro-batch ``i``'s rows of a view-major ``[V*B, ...]`` tensor: ``[V*m, ...]``."""
    views, m = value.shape[0] // batch, batch // parts
    return value.reshape(views, batch, *value.shape[1:])[:, i * m:(i + 1) * m].reshape(-1, *value.shape[1:])


def _rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


class GradCache:
    """The forward-backward of one optimizer step in ``accum_steps`` micro-batches, exactly (module docstring).

    Args:
        accum_steps: micro-batches per step (``train.accum_steps``); it must divide the per-rank batch.
    """

    def __init__(self, accum_steps: int):
        if accum_steps < 2:
            raise ValueError(f"GradCache needs accum_steps >= 2, got {accum_steps} (1 is the plain step)")
        self.accum_steps = accum_steps

    def backward(self, student: nn.Module, teacher: Any, objective: Any, batch: Mapping[str, Any], step: int,
                 precision: Precision) -> dict[str, torch.Tensor]:
        """Accumulate into ``.grad`` the gradient of the whole batch's loss; return its ``*_loss`` terms (detached).

        ``objective`` is an :class:`~cosmos.method.Objective` (``student_outputs``, ``teacher_targets``,
        ``loss_terms``); ``precision`` supplies autocast and the (fp16) loss scaling. Gradients are added to
        whatever ``.grad`` holds, as ``backward`` does: zero them first.
        """
        parts = self.accum_steps
        micro = split_batch(batch, parts)
        b = batch["images"][0].shape[0]
        device = batch["images"][0].device

        with torch.no_grad(), precision.autocast():
            found = [objective.teacher_targets(teacher, part) for part in micro]
        targets = {key: [torch.cat([t[key][v] for t in found]) for v in range(len(found[0][key]))]
                   for key in found[0]}

        states, outs = [], []
        with torch.no_grad():
            for part in micro:
                states.append(_rng_state(device))
                with precision.autocast():
                    outs.append(objective.student_outputs(student, part))
        after = _rng_state(device)
        cached = {key: (outs[0][key] if outs[0][key].ndim == 0 else _join_rows([o[key] for o in outs], b))
                  .detach().requires_grad_(outs[0][key].is_floating_point()) for key in outs[0]}
        del outs

        with precision.autocast():
            terms = objective.loss_terms(cached, targets, step)
        precision.backward(sum(terms.values()))
        grads = {key: value.grad for key, value in cached.items() if value.grad is not None}

        for i, part in enumerate(micro):
            last = i == parts - 1
            sync = contextlib.nullcontext() if last or not hasattr(student, "no_sync") else student.no_sync()
            with sync:
                _set_rng_state(states[i], device)
                with precision.autocast():
                    out = objective.student_outputs(student, part)
                pairs = [(out[key], grad if out[key].ndim == 0 else _rows(grad, b, parts, i))
                         for key, grad in grads.items() if last or out[key].ndim > 0]
                torch.autograd.backward([value for value, _ in pairs], [grad for _, grad in pairs])
        _set_rng_state(after, device)
        return {key: value.detach() for key, value in terms.items()}
