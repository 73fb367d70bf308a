"""The side-by-side benchmark's roofline: FLOPs of the CPU flash-attention kernels are counted, and the
bound on the ratio is the reference's time over the project's FLOPs at matmul peak (hand-computed)."""


import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from tests.conftest import load_script


def _side_by_side():
    return load_script("benchmarks/side_by_side.py", "side_by_side")


def test_cpu_flash_attention_forward_and_backward_are_counted():
    sbs = _side_by_side()
    b, h, s, d = 2, 3, 5, 4
    q, k, v = (torch.randn(b, h, s, d, requires_grad=True) for _ in range(3))
    with sbs.flop_counter() as counter, sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        torch.nn.functional.scaled_dot_product_attention(q, k, v).sum().backward()
    forward = 2 * (2 * b * h * s * s * d)  # Q K^T and P V
    backward = 5 * (2 * b * h * s * s * d)  # torch's formula: the scores recomputed, then dV, dP, dQ, dK
    assert counter.get_total_flops() == forward + backward


def _runs(ref_gflop=True):
    project = [{"s_per_step": s, "gflop_per_step": 400.0, "matmul_peak_gflops": p}
               for s, p in [(2.0, 200.0), (2.5, 190.0), (3.0, 210.0)]]
    reference = [{"s_per_step": s, **({"gflop_per_step": 600.0} if ref_gflop else {})} for s in (4.0, 5.0, 6.0)]
    return {"fp32": {"project": project, "reference": reference}}


def test_roofline_bound_and_share_of_peak_needed_for_2x():
    row = _side_by_side().roofline(_runs())["fp32"]
    # medians: project 2.5 s, reference 5.0 s, peak 200 GFLOP/s; 400 GFLOP at peak take 2.0 s
    assert row["matmul_peak_gflops"] == 200.0
    assert row["project_util"] == pytest.approx(400 / 2.5 / 200)
    assert row["reference_util"] == pytest.approx(600 / 5.0 / 200)
    assert row["bound_ratio"] == pytest.approx(5.0 / 2.0)
    assert row["util_for_2x"] == pytest.approx(400 / 2.5 / 200)  # 2.0x = 2.5 s, i.e. 160 GFLOP/s


def test_roofline_without_counts_is_empty_and_without_reference_has_no_bound():
    sbs = _side_by_side()
    runs = _runs()
    for r in runs["fp32"]["project"]:
        del r["gflop_per_step"]
    assert sbs.roofline(runs) == {}
    row = sbs.roofline(_runs(ref_gflop=False))["fp32"]
    assert "bound_ratio" not in row and row["project_gflop"] == 400.0
    assert "| - |" in sbs.roofline_table({"fp32": row})
