"""Objective: one step per config, the gradient component test, what the teacher sees, failure modes."""

from __future__ import annotations

import pytest
import torch

from cosmos.method import Objective, build_student
from cosmos.teacher import EMATeacher
from tests.method.test_sample_transform import DISTILL_OPTIONS, make_batch, switches_for

B = 4


def setup(option: str, *overrides: str):
    switches = switches_for(option, *overrides)
    torch.manual_seed(0)
    student = build_student("cosmos-tiny", switches)
    teacher = EMATeacher(student) if switches.needs_teacher else None
    return switches, student, teacher, Objective(switches), make_batch(switches, batch_size=B)


@pytest.mark.parametrize("option", DISTILL_OPTIONS)
def test_one_step_per_config(option):
    switches, student, teacher, objective, batch = setup(option)
    losses = objective(student, teacher, batch, step=0)
    assert tuple(losses) == switches.loss_names
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    sum(losses.values()).backward()
    assert student.logit_scale.grad is not None


def _grads(module):
    return {name: p.grad for name, p in module.named_parameters()}


def test_cosmos_every_learnable_student_parameter_gets_a_gradient_and_teacher_none():
    _, student, teacher, objective, batch = setup("cosmos")
    sum(objective(student, teacher, batch, step=0).values()).backward()
    no_grad = [n for n, g in _grads(student).items() if g is None or not torch.any(g != 0)]
    assert no_grad == []
    for prefix in ("visual.transformer", "transformer.resblocks", "visual.attn_cross_pool", "text_attn_cross_pool",
                   "image_token_mapping", "text_token_mapping", "visual.conv1", "token_embedding"):
        assert any(n.startswith(prefix) for n in _grads(student)), prefix
    assert student.logit_scale.grad != 0 and student.distill_logit_scale.grad != 0
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert not teacher.module.training


def test_without_cross_attention_its_parameters_get_no_gradient():
    # cross_attn=false keeps the cross-attention parameters (same state dict) but skips the computation, so
    # they get no gradient (DDP needs find_unused_parameters=True). distill_logit_scale still learns: the
    # unimodal distillation uses it.
    _, student, teacher, objective, batch = setup("clip_multicrop_imgdistill_textcrop_textdistill")
    sum(objective(student, teacher, batch, step=0).values()).backward()
    unused = ("visual.attn_cross_pool", "text_attn_cross_pool", "image_token_mapping", "text_token_mapping")
    for name, grad in _grads(student).items():
        if name.startswith(unused):
            assert grad is None, name
        else:
            assert grad is not None and torch.any(grad != 0), name


def record_images(monkeypatch, visual) -> list[tuple]:
    """Shapes of the image batches ``visual`` embeds (the patch embedding: conv1, or its matmul form)."""
    from cosmos.models import towers

    seen, embed = [], towers._patch_embed

    def recording(conv, images, fused):
        if conv is visual.conv1:
            seen.append(tuple(images.shape))
        return embed(conv, images, fused)

    monkeypatch.setattr(towers, "_patch_embed", recording)
    return seen


def test_teacher_sees_only_the_global_crops_and_captions(monkeypatch):
    switches, student, teacher, objective, batch = setup("cosmos")
    seen = {"images": record_images(monkeypatch, teacher.module.visual), "texts": []}
    teacher.module.token_embedding.register_forward_pre_hook(lambda m, a: seen["texts"].append(tuple(a[0].shape)))
    objective(student, teacher, batch, step=0)
    g = switches.global_crop_size
    assert seen["images"] == [(2 * B, 3, g, g)]  # one pass over [g1, g2]; no local crop
    # [G1, G2] only: 2B rows, cut after their EOT in up to two length buckets (model.trim_text)
    assert sum(rows for rows, _ in seen["texts"]) == 2 * B and all(ctx <= 24 for _, ctx in seen["texts"])


def test_teacher_targets_are_detached_and_normalized():
    _, student, teacher, objective, batch = setup("cosmos")
    targets = objective._teacher_targets(teacher, batch["images"], batch["texts"], B)
    for group in ("image", "text"):
        assert len(targets[group]) == 2
        for view in targets[group]:
            assert not view.requires_grad and view.shape == (B, student.embed_dim)
            torch.testing.assert_close(view.norm(dim=-1), torch.ones(B))


def test_image_distill_only_teacher_skips_text():
    _, student, teacher, objective, batch = setup("clip_multicrop_imgdistill")
    calls = []
    teacher.module.token_embedding.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape))
    objective(student, teacher, batch, step=0)
    assert calls == []


def test_local_crops_skipped_when_no_loss_reads_them(monkeypatch):
    switches, student, teacher, objective, batch = setup("clip_multicrop")
    sizes = record_images(monkeypatch, student.visual)
    objective(student, teacher, batch, step=0)
    assert sizes == [(2 * B, 3, 32, 32)]


def test_silc_head_learns_and_teacher_copies_it():
    _, student, teacher, objective, batch = setup("silc")
    assert hasattr(teacher.module, "dino_head")
    losses = objective(student, teacher, batch, step=0)
    sum(losses.values()).backward()
    head_grads = [p.grad for p in student.dino_head.parameters() if p.requires_grad]
    assert head_grads and all(g is not None and torch.any(g != 0) for g in head_grads)
    assert torch.any(objective.dino_loss.center != 0)
    teacher.update(student, 0.9)  # name-matched EMA covers the head


def test_missing_teacher_and_mismatched_student_fail_loudly():
    switches, student, _, objective, batch = setup("cosmos")
    with pytest.raises(ValueError, match="need an EMA teacher"):
        objective(student, None, batch, step=0)
    other = build_student("cosmos-tiny", switches.replace(cross_attn=False, image_distill=True))
    with pytest.raises(ValueError, match="distill.cross_attn=True"):
        objective(other, EMATeacher(other), batch, step=0)
    with pytest.raises(ValueError, match="image views"):
        objective(student, EMATeacher(student), {"images": batch["images"][:2], "texts": batch["texts"]}, step=0)


def test_non_finite_terms_are_returned_for_the_loop_to_check():
    # The objective does not sync the host to check its terms; Trainer.check_steps names the step (test_loop.py).
    _, student, teacher, objective, batch = setup("cosmos")
    with torch.no_grad():
        student.logit_scale.fill_(float("nan"))
    terms = objective(student, teacher, batch, step=7)
    assert torch.isnan(terms["clip_loss"]) and torch.isfinite(terms["distill_loss"])
