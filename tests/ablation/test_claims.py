"""The paper-claims logic on made-up metric tables (cosmos/ablation/claims.py)."""

import numpy as np
import pytest

from cosmos.ablation.claims import TABLE5, check_claim, check_claims, claims_markdown, paper_claims
from cosmos.report.intervals import Estimate

W = "teacher"


def _table(values: dict[str, float], width: float = 0.5):
    """An estimate function over made-up means with +-width intervals (independent replicates)."""
    rng = np.random.default_rng(0)

    def est(variant, metric):
        if variant not in values:
            return None
        v = values[variant] if not isinstance(values[variant], dict) else values[variant].get(metric)
        if v is None:
            return None
        return Estimate(v, v + rng.uniform(-width, width, 1000), 2)
    return est


def _claim(text_start):
    return next(c for c in paper_claims(W) if c.text.startswith(text_start))


def test_a_monotone_table5_is_reproduced_and_text_crop_largest():
    means = dict(zip(TABLE5, [1.0, 3.0, 5.0, 20.0, 22.0, 24.0]))
    est, trained = _table(means), set(means)
    order = check_claim(_claim("Each step"), est, trained)
    assert order.status == "reproduced" and len(order.details) == 5
    assert check_claim(_claim("Text crop is the largest"), est, trained).status == "reproduced"
    assert check_claim(_claim("Cross-attention helps"), est, trained).status == "reproduced"


def test_a_step_inside_noise_is_not_reproduced_and_says_so():
    means = dict(zip(TABLE5, [1.0, 3.0, 5.0, 20.0, 20.2, 24.0]))  # text distillation +0.2, width 0.5
    v = check_claim(_claim("Text self-distillation"), _table(means), set(means))
    assert v.status == "not reproduced"
    assert "no measurable difference" in v.details[0]
    order = check_claim(_claim("Each step"), _table(means), set(means))
    assert order.status == "not reproduced"


def test_a_loss_is_named_a_loss():
    means = dict(zip(TABLE5, [1.0, 3.0, 5.0, 20.0, 22.0, 18.0]))  # cross-attention hurts
    v = check_claim(_claim("Cross-attention helps"), _table(means), set(means))
    assert v.status == "not reproduced" and "(loss)" in v.details[0]
    assert v.details[0].startswith("+ cross-attention: -4.0 [")


def test_text_crop_not_largest_when_another_step_is_larger():
    means = dict(zip(TABLE5, [1.0, 10.0, 11.0, 13.0, 14.0, 15.0]))  # multi-crop +9 beats text crop +2
    v = check_claim(_claim("Text crop is the largest"), _table(means), set(means))
    assert v.status == "not reproduced"
    assert any(d.startswith("text crop gain - multi-crop gain: -7.0") and "(loss)" in d for d in v.details)


def test_missing_variants_make_a_claim_not_measurable():
    means = {"clip": 1.0, "base": 5.0, "no_cross_attn": 4.0}
    verdicts = {v.claim.text: v for v in check_claims(W, _table(means), set(means))}
    sizes = verdicts["COSMOS beats CLIP at every data size"]
    assert sizes.status == "not measurable" and "cosmos_data25" in sizes.details[0]
    assert "ablation=full" in sizes.details[0]
    assert verdicts["Cross-attention helps (COSMOS over COSMOS w/o cross-attention)"].status == "reproduced"


def test_a_missing_metric_is_not_measurable():
    means = {"clip": {"other": 1.0}, "base": {"other": 2.0}}
    v = check_claim(_claim("COSMOS helps segmentation"), _table(means), set(means))
    assert v.status == "not measurable" and "missing" in v.details[0]


def test_suppression_claim_reads_the_gap():
    obj, att = ("compositional.teacher.suppression.gap_obj", "compositional.teacher.suppression.gap_att")
    tables = {"clip": {obj: 15.0, att: 20.0}, "base": {obj: 3.0, att: 5.0}}
    v = check_claim(_claim("CLIP on alt text suppresses"), _table(tables), {"clip", "base"})
    assert v.status == "reproduced" and v.details[0].startswith("gap(CLIP) - gap(COSMOS), obj: +12.0")
    tables["base"][obj] = 15.2  # one gap no different: the claim needs both
    v = check_claim(_claim("CLIP on alt text suppresses"), _table(tables), {"clip", "base"})
    assert v.status == "not reproduced" and "no measurable difference" in v.details[0]


def test_markdown_has_one_row_per_claim():
    means = dict(zip(TABLE5, [1.0, 3.0, 5.0, 20.0, 22.0, 24.0]))
    lines = claims_markdown(check_claims(W, _table(means), set(means)))
    assert len(lines) == 2 + len(paper_claims(W))
    assert lines[2].startswith("| Each step of Table 5") and "**reproduced**" in lines[2]


@pytest.mark.parametrize("weights", ["teacher", "student"])
def test_claims_use_the_report_weights(weights):
    metrics = {t.metric for c in paper_claims(weights) for t in c.terms}
    assert f"retrieval.{weights}.mean_R@1" in metrics
    assert "segmentation.teacher.synthetic_bg.mIoU" in metrics  # segmentation is always the teacher's


def test_a_difference_without_an_interval_is_not_measurable():
    def est(variant, metric):
        return Estimate({"base": 5.0, "no_cross_attn": 4.0}[variant], np.full(1, np.nan), 1)
    v = check_claim(_claim("Cross-attention helps"), est, {"base", "no_cross_attn"})
    assert v.status == "not measurable" and "no item scores" in v.details[0]
