"""Schedules at the reference's check points: steps 0, warmup-1, warmup, T-1 (reference section 6)."""

import math

import numpy as np
import pytest

from cosmos.schedules import constant, cosine_lr, cosine_momentum

BASE, WARMUP, TOTAL = 5e-4, 2000, 88_576


def test_cosine_lr_key_steps():
    lr = cosine_lr(BASE, WARMUP, TOTAL)
    assert lr.shape == (TOTAL,)
    assert lr[0] == pytest.approx(BASE / 2000)  # base * (0 + 1) / warmup
    assert lr[WARMUP - 1] == pytest.approx(BASE)  # base * 2000 / 2000
    assert lr[WARMUP] == pytest.approx(BASE)  # cos(0) = 1
    assert lr[TOTAL - 1] == pytest.approx(0.5 * (1 + math.cos(math.pi * (TOTAL - 1 - WARMUP) / (TOTAL - WARMUP))) * BASE)
    assert lr[TOTAL - 1] < 1e-12


def test_cosine_lr_without_warmup_starts_at_base():
    assert cosine_lr(1.0, 0, 10)[0] == 1.0


def test_cosine_momentum_key_steps():
    m = cosine_momentum(0.999, 100)
    assert m[0] == pytest.approx(0.999)  # 1 + 1/2 (1 + 1)(m0 - 1)
    assert m[50] == pytest.approx(0.9995)  # cos(pi/2) = 0
    assert m[99] == pytest.approx(1 + 0.5 * (1 + math.cos(math.pi * 99 / 100)) * (0.999 - 1))
    assert np.all(np.diff(m) > 0) and m[-1] < 1.0


def test_constant():
    assert np.array_equal(constant(0.99, 3), np.array([0.99, 0.99, 0.99]))
