"""SiLC baseline: DINO head structure and DINO loss against an explicit formula (DINO eq. 1-2)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cosmos.losses import DINOHead, DINOLoss


def test_head_shapes_and_frozen_prototype_norm():
    head = DINOHead(16, 32, hidden_dim=24, bottleneck_dim=8)
    linears = [m for m in head.mlp if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 24), (24, 24), (24, 8)]
    assert sum(isinstance(m, nn.GELU) for m in head.mlp) == 2
    assert head(torch.randn(5, 16)).shape == (5, 32)
    magnitude = head.last_layer.parametrizations.weight.original0
    assert not magnitude.requires_grad and torch.all(magnitude == 1)
    # Unit magnitude: every prototype row of the effective weight has norm 1.
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(32))


def _explicit_loss(student, teacher, center, student_temp, teacher_temp):
    terms = []
    for iq in range(len(teacher)):
        q = F.softmax((teacher[iq] - center) / teacher_temp, dim=-1)
        for v in range(len(student)):
            if v != iq:
                log_p = F.log_softmax(student[v] / student_temp, dim=-1)
                terms.append(np.mean([-(q[b] * log_p[b]).sum().item() for b in range(q.shape[0])]))
    return float(np.mean(terms)), len(terms)


def test_loss_skips_same_view_pairs_and_updates_center():
    g = torch.Generator().manual_seed(0)
    student = [torch.randn(4, 10, generator=g, dtype=torch.float64) for _ in range(6)]
    teacher = [torch.randn(4, 10, generator=g, dtype=torch.float64) for _ in range(2)]
    loss_fn = DINOLoss(10).double()
    loss_fn.center.copy_(torch.randn(1, 10, generator=g, dtype=torch.float64))
    center_before = loss_fn.center.clone()
    out = loss_fn(student, teacher)
    expected, num_terms = _explicit_loss(student, teacher, center_before, 0.1, 0.04)
    assert num_terms == 2 * 6 - 2
    assert out["silc_distill_loss"].item() == pytest.approx(expected, abs=1e-9)
    batch_center = torch.cat(teacher).mean(dim=0, keepdim=True)
    torch.testing.assert_close(loss_fn.center, 0.9 * center_before + 0.1 * batch_center)


def test_teacher_gets_no_gradient_and_temperature_warmup():
    loss_fn = DINOLoss(5, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_steps=4)
    assert [round(loss_fn.teacher_temp_at(s), 4) for s in (0, 3, 4, 100)] == [0.04, 0.07, 0.07, 0.07]
    student = [torch.randn(3, 5, requires_grad=True) for _ in range(3)]
    teacher = [torch.randn(3, 5, requires_grad=True) for _ in range(2)]
    loss_fn(student, teacher, step=1)["silc_distill_loss"].backward()
    assert all(t.grad is None for t in teacher) and all(s.grad is not None for s in student)
