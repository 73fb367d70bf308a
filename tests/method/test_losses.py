"""CLIP and COSMOS losses against hand-computed values and an explicit loop formula (reference section 4)."""

import math

import pytest
import torch
import torch.nn.functional as F

from cosmos.losses import (
    COSMOS_PAIRINGS,
    CosmosLoss,
    chunk_views,
    contrastive_pair_loss,
    distillation_loss,
    multi_view_clip_loss,
)


def test_clip_loss_two_by_two_by_hand():
    # a = I, b = [[.6, .8], [.8, .6]], s = 2: s*a@b.T = [[1.2, 1.6], [1.6, 1.2]], symmetric, so both
    # directions give, per row, CE = log(e^1.2 + e^1.6) - 1.2 = log(1 + e^0.4) = 0.9130152524.
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[0.6, 0.8], [0.8, 0.6]])
    loss = contrastive_pair_loss(a, b, torch.tensor(2.0))
    assert loss.item() == pytest.approx(0.9130152524, abs=1e-7)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(0.4)), abs=1e-7)


def test_clip_loss_asymmetric_directions_by_hand():
    # a = I, b = [[1, 0], [.6, .8]], s = 1: logits_ab = [[1, .6], [0, .8]], logits_ba = its transpose.
    # a->b: row0 log(1 + e^-0.4), row1 log(1 + e^-0.8);  b->a: row0 log(1 + e^-1), row1 log(1 + e^-0.2).
    a = torch.eye(2)
    b = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    a_to_b = (math.log(1 + math.exp(-0.4)) + math.log(1 + math.exp(-0.8))) / 2
    b_to_a = (math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(-0.2))) / 2
    assert contrastive_pair_loss(a, b, 1.0).item() == pytest.approx((a_to_b + b_to_a) / 2, abs=1e-7)


def _loop_pair_loss(a, b, scale):
    """Symmetric InfoNCE written with explicit loops over rows, independent of the library code."""
    total = 0.0
    for x, y in ((a, b), (b, a)):
        for i in range(x.shape[0]):
            logits = [scale * float(x[i] @ y[j]) for j in range(y.shape[0])]
            total += math.log(sum(math.exp(v) for v in logits)) - logits[i]
    return total / (2 * a.shape[0])


def _loop_cl(views_a, views_b, scale):
    pairs = [_loop_pair_loss(a, b, scale) for a in views_a for b in views_b]
    return sum(pairs) / len(pairs)


def _random_views(generator, num_views, batch=5, dim=8):
    return [F.normalize(torch.randn(batch, dim, generator=generator, dtype=torch.float64), dim=-1)
            for _ in range(num_views)]


@pytest.fixture
def features():
    g = torch.Generator().manual_seed(0)
    return {
        "image_features": _random_views(g, 8), "text_features": _random_views(g, 8),
        "img_crossmodal_features": _random_views(g, 8), "txt_crossmodal_features": _random_views(g, 8),
        "teacher_image_features": _random_views(g, 2), "teacher_text_features": _random_views(g, 2),
        "logit_scale": torch.tensor(1 / 0.07, dtype=torch.float64),
        "distill_logit_scale": torch.tensor(12.5, dtype=torch.float64),
    }


def test_cosmos_loss_matches_explicit_formula(features):
    out = CosmosLoss()(**features)
    s, s_d = features["logit_scale"].item(), features["distill_logit_scale"].item()
    h_i, h_t = features["img_crossmodal_features"], features["txt_crossmodal_features"]
    t_img, t_txt = features["teacher_image_features"], features["teacher_text_features"]
    clip = _loop_cl(features["image_features"][:2], features["text_features"], s)
    distill = (_loop_cl(h_i, t_img, s_d) + _loop_cl(h_i, t_txt, s_d)
               + _loop_cl(h_t, t_img, s_d) + _loop_cl(h_t, t_txt, s_d)) / 4
    assert out["clip_loss"].item() == pytest.approx(clip, abs=1e-9)
    assert out["distill_loss"].item() == pytest.approx(distill, abs=1e-9)


def test_teacher_features_are_detached(features):
    teacher = [t.clone().requires_grad_(True) for t in features["teacher_image_features"]]
    student = [h.clone().requires_grad_(True) for h in features["img_crossmodal_features"]]
    loss = distillation_loss({"img_crossmodal": student}, {"image": teacher}, [("img_crossmodal", "image")], 10.0)
    loss.backward()
    assert all(t.grad is None for t in teacher) and all(h.grad is not None for h in student)


def test_ablation_pairings_and_weights(features):
    s_d = features["distill_logit_scale"].item()
    image_only = CosmosLoss(pairings="image_distill", clip_weight=0.0)(**features)
    expected = _loop_cl(features["image_features"], features["teacher_image_features"], s_d)
    assert image_only["distill_loss"].item() == pytest.approx(expected, abs=1e-9)
    assert image_only["clip_loss"].item() == 0.0
    text_only = CosmosLoss(pairings="text_distill")(**features)
    expected = _loop_cl(features["text_features"], features["teacher_text_features"], s_d)
    assert text_only["distill_loss"].item() == pytest.approx(expected, abs=1e-9)
    clip_only = CosmosLoss(distill_weight=0.0)(**features)
    assert clip_only["distill_loss"].item() == 0.0
    no_cross = {k: v for k, v in features.items() if "crossmodal" not in k}
    assert CosmosLoss(pairings="unimodal")(**no_cross)["distill_loss"] > 0
    with pytest.raises(ValueError, match="img_crossmodal"):
        CosmosLoss(pairings=COSMOS_PAIRINGS)(**no_cross)


def test_chunk_views_and_multi_view_mean():
    flat = torch.arange(12.0).reshape(6, 2)
    assert [v.tolist() for v in chunk_views(flat, 3)] == [[[0, 1], [2, 3]], [[4, 5], [6, 7]], [[8, 9], [10, 11]]]
    g = torch.Generator().manual_seed(1)
    views_a, views_b = _random_views(g, 3), _random_views(g, 2)
    expected = sum(contrastive_pair_loss(a, b, 5.0) for a in views_a for b in views_b) / 6
    assert multi_view_clip_loss(views_a, views_b, 5.0).item() == pytest.approx(expected.item(), abs=1e-12)
