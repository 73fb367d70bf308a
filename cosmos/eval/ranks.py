"""Retrieval ranks from a similarity matrix (reference spec 7.1), shared by evaluation and the in-training
learning curves (``cosmos.training.validation``), so that both count a hit the same way."""

from __future__ import annotations

import torch

__all__ = ["caption_ranks"]


def caption_ranks(sim: torch.Tensor, caption_to_image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """0-based ranks ``(i2t [N_img], t2i [N_txt])`` from ``sim [N_img, N_txt]``.

    i2t: for image i, the number of captions scoring strictly above its best-scoring ground-truth caption.
    t2i: for caption t, the number of images scoring strictly above its ground-truth image.
    """
    n_img, n_txt = sim.shape
    owner = caption_to_image.long()
    if owner.shape != (n_txt,) or owner.min() < 0 or owner.max() >= n_img:
        raise ValueError(f"caption_to_image must be [{n_txt}] indices < {n_img}")
    is_gt = torch.zeros(n_img, n_txt, dtype=torch.bool)
    is_gt[owner, torch.arange(n_txt)] = True
    if not is_gt.any(1).all():
        raise ValueError("every image needs at least one caption")
    best_gt = sim.masked_fill(~is_gt, float("-inf")).max(1, keepdim=True).values  # [N_img, 1]
    i2t = (sim > best_gt).sum(1)
    gt_img = sim[owner, torch.arange(n_txt)]  # [N_txt]
    t2i = (sim > gt_img.unsqueeze(0)).sum(0)
    return i2t, t2i
