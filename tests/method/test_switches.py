"""Distill switches: every conf/distill option composes and validates, the pairings rule, named errors."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from cosmos.config.compose import compose_params
from cosmos.losses import COSMOS_PAIRINGS
from cosmos.method import DistillSwitches
from tests.conftest import REPO_ROOT

DISTILL_OPTIONS = sorted(p.stem for p in (REPO_ROOT / "conf" / "distill").glob("*.yaml"))

# Table 5 rows (reference 8.4) -> (method, loss names, pairings).
EXPECTED = {
    "clip": ("clip", ("clip_loss",), ()),
    "clip_long": ("clip", ("clip_loss",), ()),
    "clip_multicrop": ("clip", ("clip_loss",), ()),
    "clip_multicrop_imgdistill": ("cosmos", ("clip_loss", "distill_loss"), (("image", "image"),)),
    "clip_multicrop_imgdistill_textcrop": ("cosmos", ("clip_loss", "distill_loss"), (("image", "image"),)),
    "clip_multicrop_imgdistill_textcrop_textdistill": (
        "cosmos", ("clip_loss", "distill_loss"), (("image", "image"), ("text", "text"))),
    "cosmos": ("cosmos", ("clip_loss", "distill_loss"), COSMOS_PAIRINGS),
    "silc": ("silc", ("clip_loss", "silc_distill_loss"), ()),
}


def switches_for(option: str, *overrides: str) -> DistillSwitches:
    params = yaml.safe_load(compose_params([f"distill={option}", *overrides]))
    return DistillSwitches.from_params(params["distill"])


def test_every_option_is_covered_and_defines_the_same_keys():
    assert DISTILL_OPTIONS == sorted(EXPECTED)
    keys = {opt: tuple(yaml.safe_load((REPO_ROOT / "conf" / "distill" / f"{opt}.yaml").read_text()))
            for opt in DISTILL_OPTIONS}
    assert len(set(keys.values())) == 1, keys


@pytest.mark.parametrize("option", DISTILL_OPTIONS)
def test_option_composes_validates_and_derives(option):
    switches = switches_for(option)
    method, loss_names, pairings = EXPECTED[option]
    assert (switches.method, switches.loss_names, switches.pairings) == (method, loss_names, pairings)
    assert switches.needs_teacher == (len(loss_names) == 2)


@pytest.mark.parametrize("option", DISTILL_OPTIONS)
def test_text_crop_can_be_switched_off_on_every_option(option):
    switches = switches_for(option, "distill.text_crop=false")
    assert switches.caption_mode in ("whole", "raw")


def test_default_composition_is_reference_cosmos():
    switches = DistillSwitches.from_params(yaml.safe_load(compose_params())["distill"])
    assert switches.pairings == COSMOS_PAIRINGS
    assert (switches.num_image_views, switches.clip_image_views, switches.num_captions) == (8, 2, 8)
    assert switches.teacher_groups == ("image", "text")
    assert switches.caption_mode == "textcrop"


def test_clip_baseline_is_one_view_one_raw_caption_no_teacher():
    switches = switches_for("clip")
    assert (switches.num_image_views, switches.num_captions, switches.caption_mode) == (1, 1, "raw")
    assert not switches.needs_teacher and switches.teacher_groups == ()


# (image_distill, text_distill, cross_attn) -> pairings, the rule of cosmos.method.switches.
PAIRINGS_TABLE = [
    ((True, False, False), (("image", "image"),)),
    ((False, True, False), (("text", "text"),)),
    ((True, True, False), (("image", "image"), ("text", "text"))),
    ((True, False, True), (("img_crossmodal", "image"), ("img_crossmodal", "text"))),
    ((False, True, True), (("txt_crossmodal", "image"), ("txt_crossmodal", "text"))),
    ((True, True, True), COSMOS_PAIRINGS),
    ((False, False, False), ()),
]


@pytest.mark.parametrize("flags, pairings", PAIRINGS_TABLE)
def test_pairings_rule(flags, pairings):
    image_distill, text_distill, cross_attn = flags
    switches = DistillSwitches().replace(image_distill=image_distill, text_distill=text_distill,
                                         cross_attn=cross_attn)
    assert switches.pairings == pairings
    assert switches.needs_teacher == bool(pairings)
    assert set(switches.teacher_groups) == {target for _, target in pairings}


@pytest.mark.parametrize("text_crop, source, mode", [
    (True, "long", "textcrop"), (True, "pixelprose", "textcrop_pixelprose"),
    (False, "long", "whole"), (False, "raw", "raw"),
])
def test_caption_mode(text_crop, source, mode):
    switches = DistillSwitches(text_crop=text_crop, caption_source=source, text_distill=False, cross_attn=False)
    assert switches.caption_mode == mode


BAD = [
    (dict(multi_crop=False, image_distill=False, text_distill=False, cross_attn=False), r"distill.local_crops=6 needs distill.multi_crop=true"),
    (dict(multi_crop=False, local_crops=0), r"distill.image_distill=true needs distill.multi_crop=true"),
    (dict(image_distill=False, text_distill=False), r"distill.cross_attn=true needs distill.image_distill"),
    (dict(method="clip"), r"distill.image_distill=true needs distill.method=cosmos"),
    (dict(method="silc"), r"distill.text_distill=true is not part of distill.method=silc"),
    (dict(caption_source="raw"), r"distill.text_crop=true needs distill.caption_source=long"),
    (dict(caption_source="pixelprose", text_crop=False), r"distill.caption_source=pixelprose needs distill.text_crop"),
    (dict(num_captions=1), r"distill.text_crop=true needs distill.num_captions >= 2"),
    (dict(num_captions=1, text_crop=False), r"distill.num_captions=1 leaves no second global caption"),
    (dict(method="dino"), r"distill.method='dino' must be one of"),
    (dict(crop_scale=1.5), r"distill.crop_scale=1.5"),
    (dict(momentum_schedule="linear"), r"distill.momentum_schedule='linear'"),
]


@pytest.mark.parametrize("changes, message", BAD)
def test_invalid_combination_names_the_key(changes, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(DistillSwitches(), **changes).validate()


def test_cli_override_errors_name_the_key():
    params = yaml.safe_load(compose_params(["distill=clip", "distill.image_distill=true"]))
    with pytest.raises(ValueError, match="distill.image_distill=true needs distill.method=cosmos"):
        DistillSwitches.from_params(params["distill"])


def test_unknown_and_missing_keys_are_named():
    section = yaml.safe_load(compose_params())["distill"]
    with pytest.raises(ValueError, match=r"distill: unknown key\(s\) \['n_crops'\]"):
        DistillSwitches.from_params({**section, "n_crops": 3})
    del section["momentum"]
    with pytest.raises(ValueError, match=r"distill: missing key\(s\) \['momentum'\]"):
        DistillSwitches.from_params(section)
    section = yaml.safe_load(compose_params())["distill"]
    del section["silc"]["out_dim"]
    with pytest.raises(ValueError, match=r"distill.silc: missing key\(s\) \['out_dim'\]"):
        DistillSwitches.from_params(section)
