"""COSMOS objective: CLIP loss plus cross-modality self-distillation (reference section 4, ``loss.py:145-207``).

With ``CL(A, B, s)`` the mean symmetric InfoNCE over all view pairs
(:func:`cosmos.losses.clip.multi_view_clip_loss`)::

    L_clip   = CL(image[:2], text[0..k-1], s)                          # 2 global crops x all captions
    L_cosmos = 1/4 [ CL(h_I, t_img, s_d) + CL(h_I, t_txt, s_d) + CL(h_T, t_img, s_d) + CL(h_T, t_txt, s_d) ]

``h_I`` / ``h_T`` are the student's cross-modal embeddings of all crops / captions, ``t_img`` / ``t_txt``
the EMA teacher's normalized embeddings of the two global crops / captions (detached), ``s`` and ``s_d``
the two learnable, already exponentiated temperatures. Same-view pairs (student g1 vs teacher g1) are
included, unlike DINO. The training step sums the returned ``*_loss`` terms.

Ablations choose which student groups distil from which teacher groups through ``pairings``; the
distillation loss is the mean of ``CL`` over the chosen pairs of groups.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from cosmos.losses.clip import multi_view_clip_loss
from cosmos.losses.gather import Gathering

# Student groups: every crop / caption view of the student ([n_views] lists of [B, D]).
STUDENT_GROUPS = ("image", "text", "img_crossmodal", "txt_crossmodal")
# Teacher groups: the global views only ([2] lists of [B, D]).
TEACHER_GROUPS = ("image", "text")

Pairing = tuple[str, str]
# Reference: both cross-modal groups against both teacher groups (section 4).
COSMOS_PAIRINGS: tuple[Pairing, ...] = (
    ("img_crossmodal", "image"), ("img_crossmodal", "text"),
    ("txt_crossmodal", "image"), ("txt_crossmodal", "text"),
)
# No cross-attention: the student's plain embeddings take the place of h_I and h_T.
UNIMODAL_PAIRINGS: tuple[Pairing, ...] = (
    ("image", "image"), ("image", "text"), ("text", "image"), ("text", "text"),
)
# Within-modality self-distillation only (image crops vs teacher image globals; captions vs captions).
IMAGE_DISTILL_PAIRINGS: tuple[Pairing, ...] = (("image", "image"),)
TEXT_DISTILL_PAIRINGS: tuple[Pairing, ...] = (("text", "text"),)
NAMED_PAIRINGS = {
    "cosmos": COSMOS_PAIRINGS,
    "unimodal": UNIMODAL_PAIRINGS,
    "image_distill": IMAGE_DISTILL_PAIRINGS,
    "text_distill": TEXT_DISTILL_PAIRINGS,
    "image_text_distill": IMAGE_DISTILL_PAIRINGS + TEXT_DISTILL_PAIRINGS,
}


def chunk_views(features: torch.Tensor, num_views: int) -> list[torch.Tensor]:
    """Split view-major ``[num_views*B, D]`` (e.g. ``[g1(B), g2(B), l1(B), ...]``) into ``num_views`` ``[B, D]``."""
    if features.shape[0] % num_views:
        raise ValueError(f"{features.shape[0]} rows do not split into {num_views} equal views")
    return list(features.chunk(num_views, dim=0))


def distillation_loss(student: Mapping[str, Sequence[torch.Tensor]], teacher: Mapping[str, Sequence[torch.Tensor]],
                      pairings: Sequence[Pairing], scale: torch.Tensor | float,
                      gathering: Gathering = Gathering()) -> torch.Tensor:
    """Mean over ``pairings`` of ``CL(student[s], teacher[t].detach(), scale)`` (reference ``loss.py:195-201``).

    ``student[g]`` is a list of ``[B, D]`` views; ``teacher[g]`` a list of ``[B, D]`` global views.
    """
    if not pairings:
        raise ValueError("distillation_loss needs at least one (student, teacher) pairing")
    terms = []
    for student_group, teacher_group in pairings:
        if student_group not in STUDENT_GROUPS or teacher_group not in TEACHER_GROUPS:
            raise ValueError(f"unknown pairing {(student_group, teacher_group)}; student groups {STUDENT_GROUPS}, "
                             f"teacher groups {TEACHER_GROUPS}")
        if student.get(student_group) is None:
            raise ValueError(f"pairing {(student_group, teacher_group)} needs student {student_group!r} features")
        targets = [view.detach() for view in teacher[teacher_group]]
        terms.append(multi_view_clip_loss(student[student_group], targets, scale, gathering))
    return torch.stack(terms).mean()


class CosmosLoss(nn.Module):
    """``{"clip_loss", "distill_loss"}`` of section 4, each multiplied by its weight.

    Args:
        pairings: (student group, teacher group) pairs of the distillation term, or a key of
            :data:`NAMED_PAIRINGS`. Default: the reference's four cross-modal pairs.
        clip_image_views: leading image views that enter the CLIP term (reference 2: global crops only,
            local crops overfit; ``None`` uses all crops, as the paper's wording suggests).
        clip_weight, distill_weight: the reference sums both with weight 1. A zero weight skips the term
            and reports an exact zero, so ablations change config, not code.
        gathering: OpenCLIP's local-loss / gather-with-grad options for both terms (:class:`Gathering`).
    """

    def __init__(self, *, pairings: Sequence[Pairing] | str = COSMOS_PAIRINGS, clip_image_views: int | None = 2,
                 clip_weight: float = 1.0, distill_weight: float = 1.0, gathering: Gathering = Gathering()):
        super().__init__()
        self.gathering = gathering
        self.pairings = tuple(NAMED_PAIRINGS[pairings] if isinstance(pairings, str) else pairings)
        self.clip_image_views = clip_image_views
        self.clip_weight = clip_weight
        self.distill_weight = distill_weight

    def forward(self, *, image_features: Sequence[torch.Tensor], text_features: Sequence[torch.Tensor],
                teacher_image_features: Sequence[torch.Tensor], teacher_text_features: Sequence[torch.Tensor],
                logit_scale: torch.Tensor, distill_logit_scale: torch.Tensor,
                img_crossmodal_features: Sequence[torch.Tensor] | None = None,
                txt_crossmodal_features: Sequence[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Student lists hold ``n_crops`` / ``k`` views ``[B, D]``; teacher lists the 2 global views ``[B, D]``."""
        zero = logit_scale.new_zeros(())
        clip_loss = zero
        if self.clip_weight:
            images = list(image_features)[: self.clip_image_views]
            clip_loss = self.clip_weight * multi_view_clip_loss(images, text_features, logit_scale,
                                                                        self.gathering)
        distill_loss = zero
        if self.distill_weight:
            student = {"image": image_features, "text": text_features,
                       "img_crossmodal": img_crossmodal_features, "txt_crossmodal": txt_crossmodal_features}
            teacher = {"image": teacher_image_features, "text": teacher_text_features}
            distill_loss = self.distill_weight * distillation_loss(student, teacher, self.pairings,
                                                                   distill_logit_scale, self.gathering)
        return {"clip_loss": clip_loss, "distill_loss": distill_loss}
