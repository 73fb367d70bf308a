"""Hard-edged rasterisation of the thing shapes, so that segmentation masks are pixel-exact.

Every shape is an implicit inside-test evaluated at pixel centres in a local frame where the shape's
circumradius is 1. No anti-aliasing: a pixel is entirely one class, so the mask *is* the rendering.
"""

from __future__ import annotations

import math

import numpy as np

from cosmos.data.synthetic.vocab import SHAPE_NAMES


def _regular_polygon(n: int, phase: float) -> np.ndarray:
    angles = phase + 2 * math.pi * np.arange(n) / n
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star() -> np.ndarray:
    angles = -math.pi / 2 + math.pi * np.arange(10) / 5
    radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


_POLYGONS: dict[str, np.ndarray] = {
    "square": np.array([[-0.72, -0.72], [0.72, -0.72], [0.72, 0.72], [-0.72, 0.72]]),
    "triangle": _regular_polygon(3, -math.pi / 2),
    "diamond": np.array([[0.0, -1.0], [0.7, 0.0], [0.0, 1.0], [-0.7, 0.0]]),
    "pentagon": _regular_polygon(5, -math.pi / 2),
    "hexagon": _regular_polygon(6, 0.0),
    "star": _star(),
}


def _inside_polygon(x: np.ndarray, y: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd ray casting; works for the non-convex star too."""
    inside = np.zeros(x.shape, dtype=bool)
    n = len(poly)
    for i in range(n):
        x1, y1 = poly[i]
        x2, y2 = poly[(i + 1) % n]
        crosses = (y1 > y) != (y2 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (x < x_at)
    return inside


def _inside(shape: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    r2 = x * x + y * y
    if shape in _POLYGONS:
        return _inside_polygon(x, y, _POLYGONS[shape])
    if shape == "circle":
        return r2 <= 1.0
    if shape == "ring":
        return (r2 <= 1.0) & (r2 >= 0.5**2)
    if shape == "crescent":
        return (r2 <= 1.0) & ((x - 0.45) ** 2 + (y + 0.1) ** 2 > 0.8**2)
    if shape == "semicircle":
        return (r2 <= 1.0) & (y >= -0.25)
    if shape == "cross":
        return ((np.abs(x) <= 0.3) & (np.abs(y) <= 0.95)) | ((np.abs(y) <= 0.3) & (np.abs(x) <= 0.95))
    if shape == "heart":
        # Classic implicit heart (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0, flipped so the point is at the bottom.
        hx, hy = x * 1.15, -(y * 1.15) + 0.15
        return (hx * hx + hy * hy - 1) ** 3 - hx * hx * hy**3 <= 0
    raise ValueError(f"unknown shape {shape!r}; known shapes: {list(SHAPE_NAMES)}")


def rasterize(shape: str, cx: float, cy: float, radius: float, angle: float, size: int) -> np.ndarray:
    """Boolean mask (size, size) of `shape` centred at pixel (cx, cy) with circumradius `radius` pixels.

    `angle` rotates the shape (radians); pixel centres sit at integer + 0.5.
    """
    coords = np.arange(size, dtype=np.float64) + 0.5
    px, py = np.meshgrid(coords, coords)
    dx, dy = (px - cx) / radius, (py - cy) / radius
    cos, sin = math.cos(angle), math.sin(angle)
    lx, ly = cos * dx + sin * dy, -sin * dx + cos * dy
    return _inside(shape, lx, ly)
