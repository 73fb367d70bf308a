"""Report numbers from metrics + item files (cosmos/ablation/estimates.py), on made-up runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from cosmos.ablation.estimates import load_run_results, variant_estimate
from cosmos.config.compose import compose_params
from cosmos.report.intervals import ItemScores, items_npz


@pytest.fixture(scope="module")
def params():
    return yaml.safe_load(compose_params())


def _write_run(tmp, run, i2t, t2i, dom, minor, base=False):
    """A run's retrieval and compositional metrics and items (hits per item; T2I one caption per image)."""
    n = len(i2t)
    ret = {"teacher": {"image_to_text_R@1": 100 * np.mean(i2t), "text_to_image_R@1": 100 * np.mean(t2i)}}
    comp = {"teacher": {"suppression": {"dominant_obj": 100 * np.mean(dom), "minor_obj": 100 * np.mean(minor)}}}
    if base:
        (tmp / "metrics").mkdir(exist_ok=True)
        (tmp / "metrics" / "eval_retrieval.json").write_text(json.dumps(ret))
        (tmp / "metrics" / "eval_compositional.json").write_text(json.dumps(comp))
    else:
        (tmp / "metrics" / "ablation").mkdir(parents=True, exist_ok=True)
        (tmp / "metrics" / "ablation" / f"{run}.json").write_text(json.dumps({"retrieval": ret, "compositional": comp}))
    folder = tmp / "items" / run
    folder.mkdir(parents=True)
    ones = np.ones(n)
    (folder / "retrieval.npz").write_bytes(items_npz({"teacher.image_to_text_R@1": ItemScores(np.array(i2t, float), ones),
                                                      "teacher.text_to_image_R@1": ItemScores(np.array(t2i, float), ones)}))
    m = len(dom)
    (folder / "compositional.npz").write_bytes(items_npz({
        "teacher.suppression.dominant_obj": ItemScores(np.array(dom, float), np.ones(m)),
        "teacher.suppression.minor_obj": ItemScores(np.array(minor, float), np.ones(m))}))


def test_seeds_are_averaged_and_derived_metrics_are_exact(tmp_path, params):
    rng = np.random.default_rng(0)
    n = 200
    _write_run(tmp_path, "base", rng.random(n) < 0.3, rng.random(n) < 0.2, rng.random(80) < 0.9,
               rng.random(80) < 0.6, base=True)
    _write_run(tmp_path, "base-s1", rng.random(n) < 0.4, rng.random(n) < 0.2, rng.random(80) < 0.9,
               rng.random(80) < 0.7)
    res = load_run_results(params, tmp_path / "metrics", tmp_path / "items")
    assert res.runs(params, "base") == ["base", "base-s1"]
    i2t = variant_estimate(res, params, "base", "retrieval.teacher.image_to_text_R@1")
    points = [res.metrics[r]["retrieval"]["teacher"]["image_to_text_R@1"] for r in ("base", "base-s1")]
    assert i2t.seeds == 2 and i2t.point == pytest.approx(np.mean(points))
    assert i2t.lo < i2t.point < i2t.hi
    t2i = variant_estimate(res, params, "base", "retrieval.teacher.text_to_image_R@1")
    mean = variant_estimate(res, params, "base", "retrieval.teacher.mean_R@1")
    assert mean.point == pytest.approx((i2t.point + t2i.point) / 2)
    np.testing.assert_allclose(mean.replicates, (i2t.replicates + t2i.replicates) / 2)
    gap = variant_estimate(res, params, "base", "compositional.teacher.suppression.gap_obj")
    dom = variant_estimate(res, params, "base", "compositional.teacher.suppression.dominant_obj")
    minor = variant_estimate(res, params, "base", "compositional.teacher.suppression.minor_obj")
    assert gap.point == pytest.approx(dom.point - minor.point) and gap.verdict() == "gain"
    assert variant_estimate(res, params, "clip", "retrieval.teacher.image_to_text_R@1") is None


def test_a_run_without_items_keeps_its_point(tmp_path, params):
    (tmp_path / "metrics" / "ablation").mkdir(parents=True)
    (tmp_path / "metrics" / "ablation" / "clip.json").write_text(
        json.dumps({"retrieval": {"teacher": {"image_to_text_R@1": 12.5}}}))
    res = load_run_results(params, tmp_path / "metrics", tmp_path / "items")
    est = variant_estimate(res, params, "clip", "retrieval.teacher.image_to_text_R@1")
    assert est.point == 12.5 and np.isnan(est.lo) and np.isnan(est.hi)
