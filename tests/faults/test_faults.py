"""Fault injection (end-to-end tier): each targeted fault, struck inside the real `pretrain` stage, resumes to
the uninterrupted run's exact final tensors and learning curve; random-moment kills run in
``benchmarks/fault_injection.py`` (their table is in docs/reliability.md)."""

from __future__ import annotations

import pytest

from tests.faults.cases import TARGETED
from tests.faults.harness import make_data, make_project, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """Shared data and the uninterrupted reference project."""
    root = tmp_path_factory.mktemp("faults")
    data = make_data(root / "data")
    reference = make_project(root / "reference", data)
    done = run(reference)
    assert done.finished, done.stderr[-2000:]
    return root, data, reference


@pytest.mark.parametrize("case", TARGETED, ids=[c.__name__ for c in TARGETED])
def test_a_fault_resumes_to_the_uninterrupted_result(case, bench):
    root, data, reference = bench
    row = case(root / "work", data, reference)
    assert row.passed(), row
