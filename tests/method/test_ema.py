"""EMA teacher: exact one-step math, frozen parameters, name matching, placement (reference section 5)."""

import pytest
import torch
from torch import nn

from cosmos.teacher import EMAPlacement, EMATeacher, step_with_ema


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))
        self.logit_scale = nn.Parameter(torch.tensor(2.6593))
        self.register_buffer("steps", torch.zeros(()))

    def forward(self, x):
        return self.encoder(x) * self.logit_scale.exp()


def test_one_step_equals_convex_combination_for_every_tensor():
    torch.manual_seed(0)
    student = Tiny()
    teacher = EMATeacher(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
        student.steps.fill_(3)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    momentum = 0.99
    teacher.update(student, momentum)
    student_state = student.state_dict()
    for name, param in teacher.module.named_parameters():
        expected = momentum * before[name] + (1 - momentum) * student_state[name]
        torch.testing.assert_close(param, expected, atol=1e-7, rtol=0)
    assert teacher.state_dict()["steps"].item() == 3


def test_teacher_never_gets_gradients():
    student = Tiny()
    teacher = EMATeacher(student)
    x = torch.randn(5, 4)
    (student(x).sum() + teacher(x).sum()).backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert not teacher.module.training


def test_ddp_style_names_are_stripped_and_mismatch_raises():
    student = Tiny()
    teacher = EMATeacher(student)
    wrapped = nn.Module()
    wrapped.module = student  # named_parameters() yields "module.encoder.0.weight", as DDP does
    teacher.update(wrapped, 0.5)
    other = nn.Linear(4, 3)
    with pytest.raises(ValueError, match="parameters differ"):
        teacher.update(other, 0.5)


def test_state_dict_round_trip():
    student = Tiny()
    teacher = EMATeacher(student)
    state = {f"module.{k}": v + 1 for k, v in student.state_dict().items()}
    teacher.load_state_dict(state)
    torch.testing.assert_close(teacher.state_dict()["logit_scale"], student.logit_scale.detach() + 1)
    assert not any(p.requires_grad for p in teacher.parameters())


@pytest.mark.parametrize("placement", list(EMAPlacement))
def test_placement_decides_which_student_weights_the_teacher_sees(placement):
    student = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        student.weight.fill_(1.0)
    teacher = EMATeacher(student)
    optimizer = torch.optim.SGD(student.parameters(), lr=1.0)
    student(torch.ones(1, 1)).sum().backward()  # grad 1: the step moves the weight from 1 to 0
    step_with_ema(optimizer.step, teacher, student, momentum=0.5, placement=placement.value)
    assert student.weight.item() == 0.0
    # Reference: the teacher absorbs the pre-step weight (1); DINO: the post-step weight (0).
    expected = 1.0 if placement is EMAPlacement.REFERENCE else 0.5
    assert teacher.module.weight.item() == expected
