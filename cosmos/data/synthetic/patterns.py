"""Surface patterns of the thing classes: each shape has its own, so identity rests on surface and silhouette.

Why: a 4-layer ViT on 32-px crops does not learn silhouettes alone from a few thousand scenes (docs/
evaluation.md, "Objects the tiny model can learn"), while it learns the texture-coded backgrounds to ~98%. Real
categories are recognisable by their surface too (fur, feathers, bark; snow is light, coal dark), and small
networks lean on it, so each shape class carries two surface cues:

- a pattern kind (dots, checks, diagonal stripes, rings, ...): a texture, learnt by the supervised tower
  from the default budget (78-83% at full contrast) but slowly by contrastive training (CLIP on alt text:
  14-32% zero-shot);
- a dark coverage, the fraction of the surface the pattern darkens (15% for circles up to 85% for
  hearts): a lightness cue that contrastive training picks up about as fast as colour (CLIP on alt text:
  41% zero-shot, dominant-object probe 81%).

The pattern only modulates brightness (`factor` in [1 - DEPTH, 1]), and its light parts keep the object's
colour, so colour stays a separate, nameable attribute; it is harder to learn beside the lightness cue
(one of CLIP's two default seeds did not learn it, docs/evaluation.md).

Patterns avoid the backgrounds' own structure (horizontal water waves, vertical grass blades, brick
courses; textures.py): stripes run diagonally, and the others are dots, checks, rings, spokes, chevrons
and a grid. Periods are in pixels of the 64-px scene (not relative to the object), about 7 px, so they
survive the 64 -> 32 px global crop (period >= 3.5 px after resizing) at every object size. Each object
draws its own period (+-10%) and phase, and the pattern turns with the object (its local frame).
"""

from __future__ import annotations

import math

import numpy as np

DEPTH = 0.9  # dark parts keep 10% of the object's brightness, the light parts its full colour (docs/evaluation.md)
PERIOD = 7.0  # pixels of the 64-px scene
_SHARPNESS = 8.0  # tanh gain (per field spread): hard-edged yet anti-aliased, robust to JPEG and resizing

PATTERNS: dict[str, str] = {
    "circle": "dots",
    "square": "checks",
    "triangle": "diagonal stripes",
    "star": "concentric rings",
    "cross": "anti-diagonal stripes",
    "ring": "spokes",
    "crescent": "chevrons",
    "heart": "grid",
    # the four shapes outside the default set (vocab.SHAPES), so that any chosen subset is patterned
    "diamond": "cross-hatch",
    "pentagon": "wavy stripes",
    "hexagon": "lattice",
    "semicircle": "large checks",
}

# Fraction of an object's visible surface its pattern darkens; spaced 0.1 apart over the default 8 shapes.
COVERAGE: dict[str, float] = {
    "circle": 0.15, "square": 0.25, "triangle": 0.35, "star": 0.45,
    "cross": 0.55, "ring": 0.65, "crescent": 0.75, "heart": 0.85,
    "diamond": 0.3, "pentagon": 0.5, "hexagon": 0.7, "semicircle": 0.4,
}


def _field(kind: str, u: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
    """A continuous pattern field at local pixel offsets (u, v) in the object's rotated frame; high = dark.

    Continuous (no plateaus), so that thresholding it at a quantile darkens exactly the wanted fraction.
    """
    k = 2 * math.pi / period
    diag = k / math.sqrt(2)
    if kind == "dots":
        return np.cos(k * u) + np.cos(k * v)
    if kind == "checks":
        return np.sin(k * u) * np.sin(k * v)
    if kind == "diagonal stripes":
        return np.sin(diag * (u + v))
    if kind == "anti-diagonal stripes":
        return np.sin(diag * (u - v))
    if kind == "concentric rings":
        return np.sin(k * np.hypot(u, v))
    if kind == "spokes":
        return np.sin(8 * np.arctan2(v, u))
    if kind == "chevrons":
        return np.sin(k * (v + np.abs(u)))
    if kind == "grid":
        return np.maximum(np.cos(k * u), np.cos(k * v))
    if kind == "cross-hatch":
        return np.maximum(np.sin(diag * (u + v)), np.sin(diag * (u - v)))
    if kind == "wavy stripes":
        return np.sin(k * (u + 0.25 * period * np.sin(k * v / 2)))
    if kind == "lattice":
        return sum(np.cos(k * (u * math.cos(a) + v * math.sin(a))) for a in (0, math.pi / 3, 2 * math.pi / 3))
    if kind == "large checks":
        return np.sin(k * u / 2) * np.sin(k * v / 2)
    raise ValueError(f"unknown pattern {kind!r}; known: {sorted(set(PATTERNS.values()))}")


def _cover(field: np.ndarray, coverage: float) -> np.ndarray:
    """Darkness in [0, 1]: the field thresholded at its (1 - coverage) quantile, so that `coverage` of the
    surface is dark, with soft edges about a tenth of the field's spread wide."""
    if field.size == 0:
        return field
    spread = float(field.std()) or 1.0
    return 0.5 + 0.5 * np.tanh(_SHARPNESS * (field - np.quantile(field, 1.0 - coverage)) / spread)


def surface_factor(shape: str, dx: np.ndarray, dy: np.ndarray, angle: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Brightness factor in [1 - DEPTH, 1] of `shape`'s pattern at pixel offsets (dx, dy) from its centre.

    `dx`, `dy`: the object's visible pixels (any shape of array); COVERAGE[shape] of them come out dark.
    `angle` is the object's rotation (radians, as in shapes.rasterize); the period and the phase are drawn
    from `rng`, so a scene stays a pure function of its seed.
    """
    if shape not in PATTERNS:
        raise ValueError(f"no surface pattern for shape {shape!r}; known: {sorted(PATTERNS)}")
    period = PERIOD * float(rng.uniform(0.9, 1.1))
    shift = rng.uniform(0, period, size=2)
    cos, sin = math.cos(angle), math.sin(angle)
    u = cos * dx + sin * dy
    v = -sin * dx + cos * dy
    kind = PATTERNS[shape]
    if kind not in ("concentric rings", "spokes", "chevrons"):  # centred patterns keep their centre
        u, v = u + shift[0], v + shift[1]
    return 1.0 - DEPTH * _cover(_field(kind, u, v, period), COVERAGE[shape])
