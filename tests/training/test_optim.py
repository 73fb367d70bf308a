"""AdamW groups, the lr schedule and the logit-scale clamp (reference 6)."""

from __future__ import annotations

import math

import pytest
import torch

from cosmos.method import DistillSwitches
from cosmos.models import build_model
from cosmos.training.config import OptimConfig
from cosmos.training.optim import LOGIT_SCALE_MAX, build_optimizer, clamp_logit_scales, is_decayed, param_groups
from cosmos.training.pretrain import _schedules

OPTIM = OptimConfig(lr=1e-3, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.5, warmup_steps=4)


@pytest.fixture(scope="module")
def tiny():
    return build_model("cosmos-tiny")


def test_weight_decay_groups_follow_the_reference_rule(tiny):
    decayed = {n for n, p in tiny.named_parameters() if is_decayed(n, p)}
    for name in ("positional_embedding", "visual.positional_embedding", "visual.proj", "text_projection",
                 "token_embedding.weight", "visual.conv1.weight", "image_token_mapping.weight",
                 "visual.attn_cross_pool.attn.in_proj_weight"):
        assert name in decayed, name
    for name in ("logit_scale", "distill_logit_scale", "visual.class_embedding", "ln_final.weight",
                 "ln_final.bias", "visual.ln_post.weight", "transformer.resblocks.0.attn.in_proj_bias"):
        assert name in dict(tiny.named_parameters()) and name not in decayed, name
    assert all(p.ndim >= 2 for n, p in tiny.named_parameters() if n in decayed)


def test_param_groups_cover_every_trainable_parameter_once(tiny):
    no_decay, decay = param_groups(tiny, 0.5)
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.5
    ids = [id(p) for p in no_decay["params"] + decay["params"]]
    assert len(ids) == len(set(ids)) == len(list(tiny.parameters()))
    opt = build_optimizer(tiny, lr=5e-4, weight_decay=0.5)
    assert opt.defaults["betas"] == (0.9, 0.98) and opt.defaults["eps"] == 1e-8


def test_lr_warms_up_linearly_then_follows_the_cosine():
    lr, momentum = _schedules(OPTIM, DistillSwitches(), total=12)
    assert lr[0] == pytest.approx(1e-3 / 4) and lr[3] == pytest.approx(1e-3)
    assert lr[4] == pytest.approx(1e-3)
    assert lr[8] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)) * 1e-3)
    assert (momentum == 0.999).all()
    _, cosine = _schedules(OPTIM, DistillSwitches(momentum_schedule="cosine"), total=12)
    assert cosine[0] == pytest.approx(0.999) and 0.999 < cosine[-1] < 1


def test_warmup_longer_than_the_run_names_the_key():
    with pytest.raises(ValueError, match="optim.warmup_steps=4 must be < the run's 3 steps"):
        _schedules(OPTIM, DistillSwitches(), total=3)


def test_both_logit_scales_are_clamped_to_0_ln100(tiny):
    with torch.no_grad():
        tiny.logit_scale.fill_(7.0)
        tiny.distill_logit_scale.fill_(-1.0)
    clamp_logit_scales([tiny])
    assert tiny.logit_scale.item() == pytest.approx(LOGIT_SCALE_MAX) == pytest.approx(math.log(100))
    assert tiny.distill_logit_scale.item() == 0.0
