"""Unit tests of the thing classes' surface patterns (cosmos/data/synthetic/patterns.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cosmos.data.synthetic import patterns, vocab
from cosmos.data.synthetic.scene import SceneConfig, sample_rng, sample_scene
from cosmos.data.synthetic.write_benchmarks import probe_scene_config


def _grid(size: int = 41) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) - size // 2
    return xx, yy


@pytest.mark.parametrize("shape", tuple(patterns.PATTERNS))
def test_factor_stays_in_range_and_uses_it(shape):
    xx, yy = _grid()
    f = patterns.surface_factor(shape, xx, yy, 0.2, np.random.default_rng(0))
    assert f.shape == xx.shape
    assert f.min() >= 1 - patterns.DEPTH - 1e-9 and f.max() <= 1 + 1e-9
    # A pattern, not a tint: both dark and light parts appear over a 41-px patch.
    assert f.min() < 1 - 0.7 * patterns.DEPTH and f.max() > 1 - 0.3 * patterns.DEPTH


def test_every_default_shape_has_its_own_pattern():
    assert set(SceneConfig().shapes) <= set(patterns.PATTERNS)
    default = SceneConfig(shapes=("circle", "square", "triangle", "star", "cross", "ring", "crescent", "heart"),
                          max_objects=3)
    kinds = [patterns.PATTERNS[s] for s in default.shapes]
    assert len(set(kinds)) == len(kinds)


def test_patterns_differ_between_classes():
    """Hand-checkable: at one sample point set, no two classes' patterns agree (mean abs difference > 0.1)."""
    xx, yy = _grid()
    maps = {s: patterns.surface_factor(s, xx, yy, 0.0, np.random.default_rng(1)) for s in patterns.PATTERNS}
    names = sorted(maps)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert np.abs(maps[a] - maps[b]).mean() > 0.1, (a, b)


def test_diagonal_stripes_are_constant_along_the_diagonal():
    """Hand-computed: 'diagonal stripes' depend on u + v only, so the factor is constant where x + y is."""
    xx, yy = _grid()
    f = patterns.surface_factor("triangle", xx, yy, 0.0, np.random.default_rng(2))
    along = np.array([f[20 + k, 20 - k] for k in range(-10, 11)])  # x + y constant
    across = np.array([f[20 + k, 20 + k] for k in range(-10, 11)])
    assert np.ptp(along) < 1e-9 and np.ptp(across) > 0.5 * patterns.DEPTH


def test_pattern_turns_with_the_object():
    xx, yy = _grid()
    a = patterns.surface_factor("square", xx, yy, 0.0, np.random.default_rng(3))
    b = patterns.surface_factor("square", xx, yy, math.pi / 2, np.random.default_rng(3))
    # checks turned by 90 degrees: the same map transposed up to the drawn phase; at least not identical
    assert not np.allclose(a, b)


def test_unknown_shape_names_the_known_ones():
    with pytest.raises(ValueError, match="no surface pattern for shape 'blob'"):
        patterns.surface_factor("blob", *_grid(), 0.0, np.random.default_rng(0))


def test_patterned_objects_keep_their_hue_and_flat_ones_are_flat():
    """Light parts of a patterned object carry its colour; a flat object's pixels are one colour +- noise."""
    flat_cfg = SceneConfig(surfaces="flat")
    pat_cfg = SceneConfig(surfaces="patterned")
    for i in range(10):
        flat = sample_scene(sample_rng(5, "t", i), flat_cfg)
        pat = sample_scene(sample_rng(5, "t", i), pat_cfg)
        assert flat.things == pat.things and np.array_equal(flat.thing_map, pat.thing_map)
        sel = pat.thing_map == 0
        rgb = np.asarray(vocab.COLOURS[pat.dominant.colour], np.float64)
        flat_px = flat.image[sel].astype(np.float64)
        assert np.abs(flat_px - rgb).max() < 12 + 4 * 5 + 1  # jitter + noise, no pattern
        pat_px = pat.image[sel].astype(np.float64)
        lum = pat_px.sum(1)
        bright = pat_px[lum >= np.percentile(lum, 90)].mean(0)
        assert np.abs(bright - rgb).max() < 30, (pat.dominant, bright, rgb)
        assert lum.std() > 3 * flat_px.sum(1).std()  # the pattern is there


def test_surfaces_is_validated():
    with pytest.raises(ValueError, match=r"data.generator.surfaces='striped'"):
        SceneConfig(surfaces="striped")


def test_compositional_scenes_have_two_objects():
    cfg = probe_scene_config(SceneConfig(min_objects=1, max_objects=3))
    assert cfg.min_objects == 2
    assert all(len(sample_scene(sample_rng(0, "compose", i), cfg).things) >= 2 for i in range(30))
    assert probe_scene_config(SceneConfig(min_objects=1, max_objects=1)).min_objects == 1


@pytest.mark.parametrize("shape", tuple(patterns.COVERAGE))
def test_coverage_is_the_dark_fraction(shape):
    """COVERAGE[shape] of the surface is darker than the midpoint between the darkest and lightest factor."""
    xx, yy = _grid(61)
    f = patterns.surface_factor(shape, xx, yy, 0.1, np.random.default_rng(4))
    dark = (f < 1 - patterns.DEPTH / 2).mean()
    assert dark == pytest.approx(patterns.COVERAGE[shape], abs=0.06)


def test_coverage_orders_the_default_classes_by_lightness():
    """The lightness cue: objects' mean brightness falls with their class's coverage (hand-set 0.1 apart)."""
    xx, yy = _grid(61)
    means = [patterns.surface_factor(s, xx, yy, 0.0, np.random.default_rng(5)).mean()
             for s in sorted(patterns.COVERAGE, key=patterns.COVERAGE.get)]
    assert all(a > b for a, b in zip(means, means[1:]))
