"""Positional-table interpolation (spec 1.4) checked against a hand-written cubic-convolution resampler."""

import math

import pytest
import torch
import torch.nn.functional as F

from cosmos.models.pos_embed import interpolate_pos_encoding


def _keys_kernel(x: float, a: float = -0.75) -> float:
    """Keys cubic-convolution kernel with PyTorch's a = -0.75."""
    x = abs(x)
    if x <= 1:
        return (a + 2) * x**3 - (a + 3) * x**2 + 1
    if x < 2:
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return 0.0


def _resample_matrix(g: int, n: int, scale: float) -> torch.Tensor:
    """[n, g] weights: output i samples source (i + 0.5) / scale - 0.5, with border-clamped taps."""
    w = torch.zeros(n, g, dtype=torch.float64)
    for i in range(n):
        src = (i + 0.5) / scale - 0.5
        base = math.floor(src)
        for k in (-1, 0, 1, 2):
            w[i, min(max(base + k, 0), g - 1)] += _keys_kernel(src - (base + k))
    return w


def _expected(table: torch.Tensor, g: int, n: int) -> torch.Tensor:
    w = _resample_matrix(g, n, (n + 0.1) / g)
    grid = table[1:].double().reshape(g, g, -1)
    patch = torch.einsum("ih,hwc,jw->ijc", w, grid, w).reshape(n * n, -1)
    return torch.cat([table[:1].double(), patch]).float()


def test_identity_at_native_grid():
    table = torch.randn(197, 768)
    assert interpolate_pos_encoding(table, (14, 14)) is table


@pytest.mark.parametrize("g,n", [(14, 6), (7, 3), (8, 4)])  # B/16 96px, B/32 96px, cosmos-tiny 16px
def test_matches_hand_built_scale_factor_resampling(g, n):
    torch.manual_seed(0)
    table = torch.randn(g * g + 1, 16)
    out = interpolate_pos_encoding(table, (n, n))
    assert out.shape == (n * n + 1, 16)
    torch.testing.assert_close(out, _expected(table, g, n), atol=1e-5, rtol=0)
    assert torch.equal(out[0], table[0])  # class-token row is never resized


def test_b16_local_crop_shape_and_size_form_differs():
    torch.manual_seed(0)
    table = torch.randn(197, 768)
    out = interpolate_pos_encoding(table, (6, 6))
    assert out.shape == (37, 768)
    # The naive size=(6, 6) form samples other points; the spec measured ~1.19 max abs difference.
    grid = table[1:].reshape(1, 14, 14, 768).permute(0, 3, 1, 2)
    naive = F.interpolate(grid, size=(6, 6), mode="bicubic", align_corners=False)
    naive = naive.permute(0, 2, 3, 1).reshape(36, 768)
    assert (out[1:] - naive).abs().max() > 0.5


def test_gradient_flows_to_table():
    table = torch.randn(65, 8, requires_grad=True)
    interpolate_pos_encoding(table, (4, 4)).sum().backward()
    assert table.grad is not None and table.grad[1:].abs().sum() > 0


def test_rejects_non_square_table_without_native_grid():
    with pytest.raises(ValueError, match="square"):
        interpolate_pos_encoding(torch.randn(1 + 12, 4), (2, 2))
