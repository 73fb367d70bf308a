"""The training objective of every method variant: student and teacher forwards, view chunking, loss terms.

One call of :class:`Objective` is the loss part of a reference training step (``train.py:123-178``):

1. the student encodes all its image views and all ``k`` captions with ``batch_size=B`` (cross-modal
   branch on when ``cross_attn``);
2. the EMA teacher, under ``no_grad``, encodes only the 2 global crops and the 2 global captions (only
   the modalities the pairings target), normalized and detached (reference 5);
3. the features are chunked into views (crop-major / caption-major) and the terms are computed:
   ``clip_loss`` (global crops x all captions, reference 4) plus ``distill_loss`` (:class:`CosmosLoss`
   with the switches' pairings) or ``silc_distill_loss`` (:class:`DINOLoss`).

The training step sums the returned ``*_loss`` terms, runs ``backward`` and the EMA update.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from cosmos.losses.cosmos_loss import CosmosLoss, chunk_views
from cosmos.losses.gather import Gathering
from cosmos.losses.silc import DINOHead, DINOLoss
from cosmos.method.switches import TEACHER_GLOBAL_VIEWS, DistillSwitches
from cosmos.models import CosmosCLIP, build_model

__all__ = ["Objective", "build_student"]


def build_student(model_name: str | dict[str, Any], switches: DistillSwitches, **model_overrides: Any) -> CosmosCLIP:
    """A fresh :class:`CosmosCLIP` whose cross-modal branch follows ``switches.cross_attn``.

    For ``method=silc`` the DINO head is attached as the submodule ``dino_head``
    (``[N, E] -> [N, silc.out_dim]``), so the EMA teacher, a deep copy of the student, carries and
    updates its own copy. Its ``dino_head.*`` keys are extra to the reference's 323-key state dict.
    """
    switches.validate()
    model = build_model(model_name, cross_attn=switches.cross_attn, **model_overrides)
    if switches.method == "silc":
        head = switches.silc
        model.dino_head = DINOHead(model.embed_dim, head.out_dim, hidden_dim=head.hidden_dim,
                                   bottleneck_dim=head.bottleneck_dim)
    return model


def _unwrap(model: Any) -> Any:
    """The bare model behind DDP / ``EMATeacher`` (both expose ``.module``)."""
    return getattr(model, "module", model)


class Objective(nn.Module):
    """``(student, teacher, batch, step) -> {"clip_loss", ["distill_loss" | "silc_distill_loss"]}``.

    Args:
        switches: the ``distill`` group; it fixes the views, the pairings and which terms exist
            (:attr:`DistillSwitches.loss_names`).
        gathering: OpenCLIP's ``local_loss`` / ``gather_with_grad`` for every term (``train`` section); the
            default is the reference's.

    An ``nn.Module`` so that the DINO centre (a buffer of :class:`DINOLoss`) follows ``.to(device)`` and
    lands in ``state_dict()`` for exact resume.
    """

    def __init__(self, switches: DistillSwitches, gathering: Gathering = Gathering()):
        super().__init__()
        switches.validate()
        self.switches = switches
        self.cosmos_loss = CosmosLoss(pairings=switches.pairings, clip_image_views=switches.clip_image_views,
                                      distill_weight=1.0 if switches.pairings else 0.0, gathering=gathering)
        self.dino_loss = None
        if switches.method == "silc" and switches.image_distill:
            head = switches.silc
            self.dino_loss = DINOLoss(head.out_dim, student_temp=head.student_temp, teacher_temp=head.teacher_temp,
                                      warmup_teacher_temp=head.teacher_temp, center_momentum=head.center_momentum,
                                      gathering=gathering)

    def forward(self, student: nn.Module, teacher: Any, batch: Mapping[str, Any], step: int = 0) -> dict[str, torch.Tensor]:
        """Loss terms of one batch: :meth:`student_outputs`, :meth:`teacher_targets`, then :meth:`loss_terms`.

        Args:
            student: the (possibly DDP-wrapped) :func:`build_student` model, in train mode.
            teacher: an :class:`cosmos.teacher.EMATeacher` of it, or None when ``not switches.needs_teacher``.
            batch: :func:`cosmos.method.collate` output: ``images`` (crop-major list of ``[B, 3, S, S]``),
                ``texts`` (``[k*B, ctx]`` caption-major) and optionally ``text_ends`` (``[k*B]`` on the host).
            step: global step (DINO teacher-temperature warm-up).

        The split exists for exact gradient accumulation (:mod:`cosmos.training.accumulation`): both forwards are
        per-sample, so they can run in micro-batches, while :meth:`loss_terms` couples the whole batch.
        """
        out = self.student_outputs(student, batch)
        return self.loss_terms(out, self.teacher_targets(teacher, batch), step)

    def student_outputs(self, student: nn.Module, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """The student forward of reference ``train.py:123-135``: a dict of view-major ``[V*B, ...]`` tensors and
        the two exp'd temperatures (0-dim); see :meth:`cosmos.models.CosmosCLIP.forward`."""
        images, texts = self._check_batch(student, batch)
        ends = _host_list(batch.get("text_ends"))
        extra = {} if ends is None else {"text_ends": ends}
        return student(images[: self.switches.student_image_views], texts, batch_size=images[0].shape[0], **extra)

    def teacher_targets(self, teacher: Any, batch: Mapping[str, Any]) -> dict[str, list[torch.Tensor]]:
        """Teacher features of the global views: ``image`` / ``text`` lists of 2 ``[B, E]``, SiLC's ``dino`` logits."""
        images, texts = list(batch["images"]), batch["texts"]
        return self._teacher_targets(teacher, images, texts, images[0].shape[0], _host_list(batch.get("text_ends")))

    def loss_terms(self, out: Mapping[str, torch.Tensor], targets: Mapping[str, list[torch.Tensor]],
                   step: int = 0) -> dict[str, torch.Tensor]:
        """The ``*_loss`` terms from the student's outputs ``out`` and the teacher's ``targets`` (section 4).

        Terms may be non-finite; the training loop checks them (without a host sync on every step).
        """
        sw = self.switches
        n_img, n_txt = sw.student_image_views, sw.num_captions
        image_views = chunk_views(out["image_features"], n_img)
        text_views = chunk_views(out["text_features"], n_txt)
        cross = {key: chunk_views(out[key], n) for key, n in
                 (("img_crossmodal_features", n_img), ("txt_crossmodal_features", n_txt)) if key in out}
        losses = self.cosmos_loss(
            image_features=image_views, text_features=text_views,
            teacher_image_features=targets.get("image", []), teacher_text_features=targets.get("text", []),
            logit_scale=out["logit_scale"], distill_logit_scale=out["distill_logit_scale"], **cross,
        )
        if not sw.pairings:
            del losses["distill_loss"]  # an exact zero; reporting it would suggest a term that does not exist
        if self.dino_loss is not None:  # the head ran inside the student's forward (DDP must see it there)
            losses.update(self.dino_loss(chunk_views(out["dino_logits"], n_img), targets["dino"], step))
        return losses

    def _check_batch(self, student: nn.Module, batch: Mapping[str, Any]) -> tuple[list[torch.Tensor], torch.Tensor]:
        sw = self.switches
        images, texts = list(batch["images"]), batch["texts"]
        if len(images) != sw.num_image_views:
            raise ValueError(f"batch has {len(images)} image views, the distill switches expect {sw.num_image_views}")
        b = images[0].shape[0]
        if texts.shape[0] != sw.num_captions * b:
            raise ValueError(f"batch has {texts.shape[0]} caption rows, expected num_captions*B = "
                             f"{sw.num_captions}*{b}")
        if bool(getattr(_unwrap(student), "cross_attn", False)) != sw.cross_attn:
            raise ValueError(f"student.cross_attn={_unwrap(student).cross_attn} but distill.cross_attn={sw.cross_attn}; "
                             "build the student with build_student(..., switches)")
        return images, texts

    @torch.no_grad()
    def _teacher_targets(self, teacher: Any, images: Sequence[torch.Tensor], texts: torch.Tensor,
                         b: int, text_ends: list[int] | None = None) -> dict[str, list[torch.Tensor]]:
        """Teacher features of the global views: ``image`` / ``text`` lists of 2 ``[B, E]``, ``dino`` logits."""
        groups = self.switches.teacher_groups
        if not groups:
            return {}
        if teacher is None:
            raise ValueError(f"distill switches need an EMA teacher for {groups}, got teacher=None")
        model = _unwrap(teacher)
        targets: dict[str, list[torch.Tensor]] = {}
        # Reference train.py:140-150: the teacher sees [g1, g2] and [G1, G2] only, without batch_size (no cross
        # branch), normalized. Only the modalities some pairing targets are encoded.
        if "image" in groups:
            feats = model.encode_image(list(images[:TEACHER_GLOBAL_VIEWS]), normalize=True)
            targets["image"] = chunk_views(feats.detach(), TEACHER_GLOBAL_VIEWS)
        if "text" in groups:
            ends = None if text_ends is None else text_ends[: TEACHER_GLOBAL_VIEWS * b]
            feats = model.encode_text(texts[: TEACHER_GLOBAL_VIEWS * b], normalize=True, text_ends=ends)
            targets["text"] = chunk_views(feats.detach(), TEACHER_GLOBAL_VIEWS)
        if self.switches.method == "silc":
            targets["dino"] = [model.dino_head(view).detach() for view in targets["image"]]
        return targets


def _host_list(ends: Any) -> list[int] | None:
    """The batch's ``text_ends`` (host EOT ends, caption-major) as a list: DDP copies tensor arguments to the
    device, and reading them back there would be the sync they exist to avoid."""
    if ends is None:
        return None
    return ends.tolist() if isinstance(ends, torch.Tensor) else list(ends)
