"""Bad-input corpus (end-to-end tier): each broken input, through the stage a user runs, ends in one line
naming the cause and the fix, or a counted skip, and leaves no half-written output (cases in cases.py; the
table in docs/reliability.md comes from ``benchmarks/bad_inputs.py``)."""

from __future__ import annotations

import pytest

from tests.data.bad.cases import CASES
from tests.data.bad.corpus import make_bench

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return make_bench(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("case", [c for _, c in CASES], ids=[c.__name__ for _, c in CASES])
def test_a_bad_input_is_refused_in_one_line_or_skipped_and_counted(case, bench):
    seen = case(bench)
    assert seen.outcome, "the case must say what the user saw"
