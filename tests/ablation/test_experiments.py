"""The experiments table is built from `dvc exp show --json` data (shape as DVC 3.x prints it)."""

from __future__ import annotations

from cosmos.ablation.experiments import differing_params, experiment_results, render_experiments


def _data(i2t: float, text_crop: bool) -> dict:
    return {
        "params": {"params.yaml": {"data": {"distill": {"text_crop": text_crop}, "seed": 0,
                                            "ablation": {"run": ["x"] if text_crop else []}}}},
        "metrics": {"reports/metrics/eval_retrieval.json": {"data": {"teacher": {"image_to_text_R@1": i2t}}}},
    }


ENTRIES = [
    {"rev": "workspace", "name": None, "data": _data(5.0, True)},
    {"rev": "abcdef1234", "name": "main", "data": _data(5.0, True),
     "experiments": [{"name": "no-tc", "revs": [{"rev": "999", "name": "no-tc", "data": _data(3.0, False)}]}]},
]


def test_rows_and_differing_params():
    results, params = experiment_results(ENTRIES)
    assert list(results) == ["workspace", "main", "no-tc"]
    assert results["no-tc"]["retrieval"]["teacher"]["image_to_text_R@1"] == 3.0
    assert differing_params(params) == ["distill.text_crop"], "ablation.* is ignored"


def test_render_writes_markdown_csv_and_latex(tmp_path):
    out = render_experiments(ENTRIES, tmp_path / "experiments.md")
    text = out.read_text()
    assert "| no-tc | 3.0 |" in text and "| main | **5.0** |" in text
    assert "`no-tc`: distill.text_crop=False" in text
    assert (tmp_path / "experiments.csv").read_text().startswith("variant,params that differ,I2T R@1")
    assert r"\toprule" in (tmp_path / "experiments.tex").read_text()
