"""Unit tier for report tables: values by dotted path, bold best, missing shown as a dash, LaTeX booktabs."""

from __future__ import annotations

import math

from cosmos.report.tables import Column, TableSpec, build_table, lookup, to_csv, to_latex, to_markdown

SPEC = TableSpec(
    name="t", title="T",
    rows=(("a", "A"), ("b", "B"), ("c", "C (missing)")),
    columns=(Column("r.s.r1", "R@1"), Column("loss", "Loss", higher_is_better=False)),
)
RESULTS = {"a": {"r": {"s": {"r1": 10.0}}, "loss": 2.0}, "b": {"r": {"s": {"r1": 12.5}}, "loss": math.nan}}


def test_lookup_by_dotted_path():
    assert lookup(RESULTS["a"], "r.s.r1") == 10.0
    assert lookup(RESULTS["a"], "r.x.r1") is None
    assert lookup(RESULTS["b"], "loss") is None, "non-finite values are missing, not numbers"
    assert lookup({"flag": True}, "flag") is None


def test_markdown_bolds_the_best_per_column_and_dashes_missing():
    md = to_markdown(build_table(SPEC, RESULTS), SPEC)
    lines = md.splitlines()
    assert lines[0] == "| variant | R@1 | Loss |"
    assert lines[2] == "| A | 10.0 | **2.0** |"
    assert lines[3] == "| B | **12.5** | – |"
    assert lines[4] == "| C (missing) | – | – |"


def test_latex_is_booktabs_with_bold_best():
    tex = to_latex(build_table(SPEC, RESULTS), SPEC)
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"B & \textbf{12.5} & -- \\" in tex
    assert r"Variant & R@1 & Loss \\" in tex


def test_csv_keeps_missing_cells_empty():
    csv = to_csv(build_table(SPEC, RESULTS)).splitlines()
    assert csv[0] == "variant,R@1,Loss"
    assert csv[3] == "C (missing),,"
