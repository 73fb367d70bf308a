"""Bootstrap intervals on hand-computed cases (cosmos/report/intervals.py)."""

import numpy as np
import pytest

from cosmos.report.intervals import (
    Estimate, ItemScores, estimate, format_interval, item_draws, items_npz, load_items, seed_draws,
)


def test_ratio_metric_values_by_hand():
    hits = ItemScores(np.array([1, 0, 1, 1]), np.ones(4))
    assert hits.value() == pytest.approx(75.0)
    # mIoU-like: class 0 IoU = (2+1)/(4+2) = 0.5, class 1 = 1/4; the mean is 37.5
    iou = ItemScores(np.array([[2, 0], [1, 1]]), np.array([[4, 0], [2, 4]]))
    assert iou.value() == pytest.approx(37.5)
    # a class absent from the drawn items is left out of the mean (nanmean), not counted as 0
    assert iou.resampled(np.array([[0, 0]]))[0] == pytest.approx(50.0)


def test_resampled_follows_the_draw():
    s = ItemScores(np.array([1, 0, 0, 0]), np.ones(4))
    idx = np.array([[0, 0, 0, 0], [1, 2, 3, 1], [0, 1, 2, 3]])
    np.testing.assert_allclose(s.resampled(idx), [100.0, 0.0, 25.0])


def test_bad_item_scores_are_refused():
    with pytest.raises(ValueError, match="num <= den"):
        ItemScores(np.array([2.0]), np.array([1.0]))
    with pytest.raises(ValueError, match="equal non-empty"):
        ItemScores(np.zeros(3), np.ones(2))


def test_draws_are_deterministic_and_shared_by_item_count():
    np.testing.assert_array_equal(item_draws(50, 10), item_draws(50, 10))
    assert not np.array_equal(item_draws(50, 10), item_draws(51, 10)[:, :50])
    np.testing.assert_array_equal(seed_draws(2, "clip", 10), seed_draws(2, "clip", 10))


def test_constant_items_have_a_zero_width_interval():
    est = estimate([ItemScores(np.ones(30), np.ones(30))], "x", n_boot=200)
    assert (est.point, est.lo, est.hi) == (100.0, 100.0, 100.0)


def test_binomial_interval_matches_the_normal_approximation():
    # 400 items at p = 0.3: the 95% interval half-width is about 1.96 * sqrt(.3 * .7 / 400) = 4.5 points
    hits = np.zeros(400)
    hits[:120] = 1
    est = estimate([ItemScores(hits, np.ones(400))], "x", n_boot=4000)
    assert est.point == pytest.approx(30.0)
    assert est.hi - est.point == pytest.approx(4.5, abs=0.6)
    assert est.point - est.lo == pytest.approx(4.5, abs=0.6)


def test_seed_spread_widens_the_interval():
    n = 400
    a, b = np.zeros(n), np.zeros(n)
    a[:80], b[:160] = 1, 1  # seeds at 20% and 40%
    one = estimate([ItemScores(a, np.ones(n))], "x", n_boot=2000)
    two = estimate([ItemScores(a, np.ones(n)), ItemScores(b, np.ones(n))], "x", n_boot=2000)
    assert two.point == pytest.approx(30.0)
    assert two.seeds == 2
    # resampling 2 seeds gives means of 20, 30 or 40 (+- item noise): the interval spans both seeds
    assert two.lo < 22 and two.hi > 38
    assert (two.hi - two.lo) > 2 * (one.hi - one.lo)


def test_paired_difference_cancels_shared_item_noise():
    rng = np.random.default_rng(0)
    n = 300
    base = (rng.random(n) < 0.5).astype(float)
    better = base.copy()
    flip = np.flatnonzero(base == 0)[:15]  # +5 points, on the same items
    better[flip] = 1
    a = estimate([ItemScores(better, np.ones(n))], "a", n_boot=2000)
    b = estimate([ItemScores(base, np.ones(n))], "b", n_boot=2000)
    diff = a - b
    assert diff.point == pytest.approx(5.0)
    assert diff.verdict() == "gain"
    # unpaired, the same 5 points would sit inside the single-run intervals
    assert a.lo < b.hi
    assert (b - a).verdict() == "loss"
    assert (a - a).verdict() == "none"


def test_verdict_and_formatting():
    est = Estimate(1.5, np.array([-1.0, 0.5, 2.0, 3.0]), 1)
    assert est.verdict() == "none"
    assert Estimate(1.0, np.array([0.2, 1.0, 2.0]), 1).verdict() == "gain"
    assert format_interval(Estimate(12.34, np.full(10, 12.34), 1)) == "12.3 [12.3, 12.3]"
    assert format_interval(Estimate(1.0, np.array([0.5, 1.5]), 1), signed=True).startswith("+1.0 [")
    assert format_interval(None) == "–"


def test_items_archive_round_trip(tmp_path):
    items = {"retrieval.teacher.image_to_text_R@1": ItemScores(np.array([1, 0, 1]), np.ones(3)),
             "segmentation.teacher.x.mIoU": ItemScores(np.array([[3, 0]]), np.array([[7, 2]]))}
    path = tmp_path / "items.npz"
    path.write_bytes(items_npz(items))
    back = load_items(path)
    assert sorted(back) == sorted(items)
    for k in items:
        np.testing.assert_array_equal(back[k].num, items[k].num)
        np.testing.assert_array_equal(back[k].den, items[k].den)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz: not a readable item-scores archive"):
        load_items(tmp_path / "bad.npz")


def test_an_estimate_without_replicates_says_so():
    assert format_interval(Estimate(3.0, np.full(1, np.nan), 1)) == "3.0 (no interval)"
    assert Estimate(3.0, np.full(1, np.nan), 1).verdict() == "none"
