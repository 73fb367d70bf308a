"""The ablation switches of the method: the ``distill`` config group as one frozen, validated dataclass.

Each boolean switch is one row of the paper's cumulative CC3M ablation (Table 5, reference 8.4):
``multi_crop`` (image aug), ``image_distill`` (image self-distillation), ``text_crop`` (text aug),
``text_distill`` (text self-distillation) and ``cross_attn`` (cross-attention; all five on = COSMOS).

Pairings rule (what the distillation term compares, :attr:`DistillSwitches.pairings`):

- student groups = {image side if ``image_distill``} U {text side if ``text_distill``};
- the student feature of a side is its cross-modal embedding (``h_I`` / ``h_T``) when ``cross_attn``,
  else the plain embedding (``image`` / ``text``);
- the teacher targets are both teacher modalities (global crops and global captions) when
  ``cross_attn``, else the same modality only.

All on gives exactly the reference's four groups (``COSMOS_PAIRINGS``, reference section 4).

The CLIP term always uses the global image crops (2 with ``multi_crop``, 1 without) against all
captions; local crops reach the loss only through distillation (reference 10.1).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from cosmos.config.sections import check_keys
from cosmos.losses.cosmos_loss import Pairing

METHODS = ("cosmos", "clip", "silc")
CAPTION_SOURCES = ("long", "raw", "pixelprose")
MOMENTUM_SCHEDULES = ("fixed", "cosine")
EMA_PLACEMENTS = ("reference", "dino")
# The teacher sees the two global views of each modality it provides targets for (reference 5).
TEACHER_GLOBAL_VIEWS = 2


@dataclass(frozen=True)
class SilcHead:
    """DINO head and loss sizes of the SiLC baseline (``distill.silc``; used only when ``method=silc``).

    DINO's defaults are ``out_dim=65536, hidden_dim=2048, bottleneck_dim=256``; the synthetic configs
    shrink them for the tiny CPU model.
    """

    out_dim: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    center_momentum: float = 0.9


@dataclass(frozen=True)
class DistillSwitches:
    """The ``distill`` config group (defaults: reference COSMOS on real data, 224/96 px crops).

    Args:
        method: ``cosmos`` (CLIP + cross-modality self-distillation), ``clip`` (CLIP loss only, no
            teacher) or ``silc`` (CLIP + DINO local-to-global image distillation).
        multi_crop: 2 global + ``local_crops`` local image crops (reference 3.3); else one
            open_clip-style random crop.
        image_distill: distil the student's image side (all crops) towards the teacher.
        text_crop: text cropping (reference 3.2) over the chosen ``caption_source``.
        text_distill: distil the student's text side (all captions) towards the teacher.
        cross_attn: run the cross-modal branch and distil ``h_I`` / ``h_T`` towards both teacher modalities.
        caption_source: ``long`` (all seven DreamLIP fields), ``raw`` (alt text only) or ``pixelprose``.
        num_captions: captions per image ``k`` (reference 8: 2 global + 6 local).
        local_crops: local crops per image (reference 6; 0 without ``multi_crop``).
        global_crop_size, local_crop_size: crop sides in px (reference 224 / 96).
        crop_scale: global ``(crop_scale, 1)`` / local ``(0.05, crop_scale)`` area ranges (reference 0.4).
        momentum: teacher EMA momentum ``m0`` (reference 0.999 on CC3M).
        momentum_schedule: ``fixed`` (reference ``--fix-momentum``) or ``cosine`` (``m0`` -> 1).
        ema_placement: ``reference`` (EMA before ``optimizer.step()``) or ``dino`` (after).
        silc: :class:`SilcHead`.
    """

    method: str = "cosmos"
    multi_crop: bool = True
    image_distill: bool = True
    text_crop: bool = True
    text_distill: bool = True
    cross_attn: bool = True
    caption_source: str = "long"
    num_captions: int = 8
    local_crops: int = 6
    global_crop_size: int = 224
    local_crop_size: int = 96
    crop_scale: float = 0.4
    momentum: float = 0.999
    momentum_schedule: str = "fixed"
    ema_placement: str = "reference"
    silc: SilcHead = field(default_factory=SilcHead)

    # ------------------------------------------------------------------------------------ building

    @classmethod
    def from_params(cls, section: Mapping[str, Any], prefix: str = "distill") -> "DistillSwitches":
        """Build and validate from the ``distill`` section of ``params.yaml``; every key is mandatory."""
        section = dict(section)
        silc = _exact_keys(SilcHead, dict(section.pop("silc", {}) or {}), f"{prefix}.silc")
        section["silc"] = None  # placeholder so the key check below sees it
        _exact_keys(cls, section, prefix)
        section["silc"] = SilcHead(**silc)
        switches = cls(**section)
        switches.validate(prefix)
        return switches

    def replace(self, **changes: Any) -> "DistillSwitches":
        """A validated copy with ``changes`` applied (``dataclasses.replace`` + :meth:`validate`)."""
        switches = dataclasses.replace(self, **changes)
        switches.validate()
        return switches

    def validate(self, prefix: str = "distill") -> None:
        """Raise ``ValueError`` naming the offending key for any inconsistent combination."""
        for message in self._problems():
            raise ValueError(message.format(p=prefix))

    def _problems(self) -> list[str]:
        problems = []
        for key, allowed in (("method", METHODS), ("caption_source", CAPTION_SOURCES),
                             ("momentum_schedule", MOMENTUM_SCHEDULES), ("ema_placement", EMA_PLACEMENTS)):
            if getattr(self, key) not in allowed:
                problems.append(f"{{p}}.{key}={getattr(self, key)!r} must be one of {allowed}")
        for key in ("multi_crop", "image_distill", "text_crop", "text_distill", "cross_attn"):
            if not isinstance(getattr(self, key), bool):
                problems.append(f"{{p}}.{key}={getattr(self, key)!r} must be true or false")
        for key, low in (("num_captions", 1), ("local_crops", 0), ("global_crop_size", 1), ("local_crop_size", 1)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                problems.append(f"{{p}}.{key}={value!r} must be an integer >= {low}")
        if not 0.05 < self.crop_scale < 1.0:
            problems.append(f"{{p}}.crop_scale={self.crop_scale} must lie in (0.05, 1)")
        if not 0.0 <= self.momentum <= 1.0:
            problems.append(f"{{p}}.momentum={self.momentum} must lie in [0, 1]")
        return problems or self._combination_problems()

    def _combination_problems(self) -> list[str]:
        problems = []
        if self.local_crops and not self.multi_crop:
            problems.append(f"{{p}}.local_crops={self.local_crops} needs {{p}}.multi_crop=true "
                            "(or set {p}.local_crops=0)")
        if self.text_crop and self.caption_source == "raw":
            problems.append("{p}.text_crop=true needs {p}.caption_source=long or pixelprose: cropping the "
                            "alt text alone is not the reference's text crop")
        if self.caption_source == "pixelprose" and not self.text_crop:
            problems.append("{p}.caption_source=pixelprose needs {p}.text_crop=true (there is no "
                            "whole-caption mode for PixelProse)")
        if self.text_crop and self.num_captions < 2:
            problems.append(f"{{p}}.text_crop=true needs {{p}}.num_captions >= 2 (two global captions), "
                            f"got {self.num_captions}")
        if self.method == "clip":
            problems += [f"{{p}}.{key}=true needs {{p}}.method=cosmos (method clip has no teacher)"
                         for key in ("image_distill", "text_distill", "cross_attn") if getattr(self, key)]
        if self.method == "silc":
            problems += [f"{{p}}.{key}=true is not part of {{p}}.method=silc (image-only DINO distillation)"
                         for key in ("text_distill", "cross_attn") if getattr(self, key)]
        if self.image_distill and not self.multi_crop:
            problems.append("{p}.image_distill=true needs {p}.multi_crop=true (the teacher's targets are the "
                            "two global crops)")
        if self.cross_attn and not (self.image_distill or self.text_distill):
            problems.append("{p}.cross_attn=true needs {p}.image_distill=true or {p}.text_distill=true: the "
                            "cross-modal embeddings feed only the distillation loss")
        if "image" in self.teacher_groups and not self.multi_crop:
            problems.append("{p}.multi_crop=false leaves no second global crop for the teacher's image "
                            f"targets (pairings {self.pairings}); set {{p}}.multi_crop=true")
        if "text" in self.teacher_groups and self.num_captions < TEACHER_GLOBAL_VIEWS:
            problems.append(f"{{p}}.num_captions={self.num_captions} leaves no second global caption for the "
                            f"teacher's text targets (pairings {self.pairings}); set {{p}}.num_captions >= 2")
        return problems

    # ----------------------------------------------------------------------------------- derived

    @property
    def caption_mode(self) -> str:
        """The :func:`cosmos.text.sample_captions` mode: textcrop[_pixelprose] with text_crop, else whole / raw."""
        if self.text_crop:
            return "textcrop_pixelprose" if self.caption_source == "pixelprose" else "textcrop"
        return "whole" if self.caption_source == "long" else "raw"

    @property
    def num_global_crops(self) -> int:
        """Global image crops per image: 2 with multi-crop, else the single random crop."""
        return 2 if self.multi_crop else 1

    @property
    def num_image_views(self) -> int:
        """Image tensors per sample produced by the data pipeline: globals + locals."""
        return self.num_global_crops + (self.local_crops if self.multi_crop else 0)

    @property
    def clip_image_views(self) -> int:
        """Leading image views entering the CLIP term (global crops only, reference 10.1)."""
        return self.num_global_crops

    @property
    def student_image_views(self) -> int:
        """Image views the student must encode: all crops if a distillation term reads the image side.

        Without image-side distillation the local crops reach no loss, so the objective drops them
        (no loss value changes: the cross-attention keys come from the first global crop only).
        """
        return self.num_image_views if self.image_distill else self.num_global_crops

    @property
    def needs_teacher(self) -> bool:
        """Whether an EMA teacher exists: some distillation switch is on under cosmos or silc."""
        if self.method == "cosmos":
            return self.image_distill or self.text_distill
        return self.method == "silc" and self.image_distill

    @property
    def pairings(self) -> tuple[Pairing, ...]:
        """(student group, teacher group) pairs of ``distill_loss`` by the pairings rule (module docstring).

        Empty for ``method`` clip and silc (SiLC's DINO term is not pairing-based).
        """
        if self.method != "cosmos":
            return ()
        sides = []
        if self.image_distill:
            sides.append(("img_crossmodal" if self.cross_attn else "image", "image"))
        if self.text_distill:
            sides.append(("txt_crossmodal" if self.cross_attn else "text", "text"))
        return tuple((student, target) for student, own in sides
                     for target in (("image", "text") if self.cross_attn else (own,)))

    @property
    def teacher_groups(self) -> tuple[str, ...]:
        """Teacher modalities the objective must encode (``image`` = global crops, ``text`` = global captions)."""
        if self.method == "silc":
            return ("image",) if self.image_distill else ()
        targets = {target for _, target in self.pairings}
        return tuple(group for group in ("image", "text") if group in targets)

    @property
    def loss_names(self) -> tuple[str, ...]:
        """Names of the terms :class:`cosmos.method.Objective` returns."""
        if not self.needs_teacher:
            return ("clip_loss",)
        return ("clip_loss", "silc_distill_loss" if self.method == "silc" else "distill_loss")


def _exact_keys(cls: type, section: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Return ``section`` unchanged if its keys are exactly ``cls``'s fields; else name the odd keys."""
    check_keys(cls, section, prefix)
    return section
