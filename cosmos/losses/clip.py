"""Symmetric InfoNCE between paired embeddings, reference ``ClipLoss`` (``loss.py:103-142``, section 4).

For one pair of views ``a, b`` (both ``[B, D]``, L2-normalized, positives on the diagonal)::

    l(a, b) = 1/2 [ CE(s * a @ b.T, arange(B)) + CE(s * b @ a.T, arange(B)) ]

Under data parallelism the features are first gathered (:func:`cosmos.losses.gather.gather_features`)
and the labels are ``arange(global_B)`` over the full global-by-global matrix, exactly as the reference.
The loss value on every rank then equals the single-process loss on the concatenated batch, and the
gradient reaching a rank's own features equals the matching rows of the single-process gradient.
OpenCLIP's ``--local-loss`` / ``--gather-with-grad`` are available as a :class:`~cosmos.losses.gather.Gathering`.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from cosmos.losses.gather import Gathering, distributed_world, gather_features


def _pair_loss(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    if a.shape != b.shape:
        raise ValueError(f"paired views must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    labels = torch.arange(a.shape[0], device=a.device)
    # Both products are computed explicitly (not one transpose) to follow the reference's arithmetic.
    logits_ab = scale * a @ b.T
    logits_ba = scale * b @ a.T
    return 0.5 * (F.cross_entropy(logits_ab, labels) + F.cross_entropy(logits_ba, labels))


def _local_pair_loss(a: torch.Tensor, b: torch.Tensor, a_all: torch.Tensor, b_all: torch.Tensor,
                     scale: torch.Tensor | float) -> torch.Tensor:
    """OpenCLIP ``--local-loss``: this rank's rows ``a, b [B_local, D]`` against all columns ``[N, D]``."""
    rank, _ = distributed_world()
    labels = torch.arange(a.shape[0], device=a.device) + rank * a.shape[0]
    return 0.5 * (F.cross_entropy(scale * a @ b_all.T, labels) + F.cross_entropy(scale * b @ a_all.T, labels))


def contrastive_pair_loss(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | float,
                          gathering: Gathering = Gathering()) -> torch.Tensor:
    """``l(a, b)`` for ``a, b: [B_local, D]`` and a scalar (already exp'd) ``scale``; gathers across ranks."""
    return multi_view_clip_loss([a], [b], scale, gathering)


def multi_view_clip_loss(views_a: Sequence[torch.Tensor], views_b: Sequence[torch.Tensor],
                         scale: torch.Tensor | float, gathering: Gathering = Gathering()) -> torch.Tensor:
    """Mean of ``l(a, b)`` over all ``|A|*|B|`` pairs, reference ``ClipLoss.forward(list_A, list_B, s)``.

    ``views_a`` and ``views_b`` are lists of ``[B_local, D]`` views with the same samples in the same row
    order. Each view is gathered once; the result equals gathering inside every pair, as the reference does.
    ``gathering``: OpenCLIP's local-loss / gather-with-grad options (:class:`~cosmos.losses.gather.Gathering`);
    in a single process every option gives the same value.
    """
    if not views_a or not views_b:
        raise ValueError("multi_view_clip_loss needs at least one view on each side")
    gathered = gather_features(*views_a, *views_b, with_grad=gathering.with_grad)
    gathered_a, gathered_b = gathered[: len(views_a)], gathered[len(views_a):]
    if gathering.local_loss and distributed_world()[1] > 1:
        losses = [_local_pair_loss(a, b, a_all, b_all, scale) for a, a_all in zip(views_a, gathered_a)
                  for b, b_all in zip(views_b, gathered_b)]
    else:
        losses = [_pair_loss(a, b, scale) for a in gathered_a for b in gathered_b]
    return torch.stack(losses).mean()
