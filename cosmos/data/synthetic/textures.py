"""Procedural textures for the stuff classes: each class has a colour family *and* a spatial pattern.

A texture is a float32 (size, size, 3) array in [0, 255]. Textures are drawn from the caller's numpy
Generator so that a scene is a pure function of its seed.
"""

from __future__ import annotations

import numpy as np


def _value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1]: a random (cells+1)^2 lattice bilinearly upsampled to size x size."""
    lattice = rng.random((cells + 1, cells + 1))
    t = np.linspace(0, cells, size, endpoint=False)
    i = t.astype(int)
    f = t - i
    rows = lattice[i] * (1 - f)[:, None] + lattice[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def _mix(a: tuple[float, ...], b: tuple[float, ...], w: np.ndarray) -> np.ndarray:
    a_, b_ = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return a_ * (1 - w[..., None]) + b_ * w[..., None]


def _sky(rng, size, yy, xx):
    gradient = yy / size
    base = _mix((90, 150, 235), (170, 210, 250), gradient)
    clouds = np.clip(_value_noise(rng, size, 3) * 1.8 - 1.0, 0, 1)
    return base * (1 - clouds[..., None]) + 245 * clouds[..., None]


def _grass(rng, size, yy, xx):
    blades = np.sin(xx * rng.uniform(1.6, 2.4) + _value_noise(rng, size, 4) * 6) * 0.5 + 0.5
    return _mix((40, 110, 30), (110, 190, 60), 0.6 * blades + 0.4 * _value_noise(rng, size, 8))


def _water(rng, size, yy, xx):
    waves = np.sin(yy * rng.uniform(0.7, 1.1) + np.sin(xx * 0.3) * 1.5) * 0.5 + 0.5
    return _mix((10, 70, 120), (60, 140, 180), 0.7 * waves + 0.3 * _value_noise(rng, size, 5))


def _sand(rng, size, yy, xx):
    speckle = rng.random((size, size))
    return _mix((190, 160, 110), (235, 210, 160), 0.5 * speckle + 0.5 * _value_noise(rng, size, 4))


def _wall(rng, size, yy, xx):
    brick_h = max(size // 8, 3)
    row = (yy // brick_h).astype(int)
    offset = (row % 2) * brick_h
    mortar = ((yy % brick_h) < 1) | (((xx + offset) % (2 * brick_h)) < 1)
    shade = _value_noise(rng, size, 6)
    bricks = _mix((120, 60, 45), (160, 90, 70), shade)
    return np.where(mortar[..., None], np.float32(200), bricks)


def _snow(rng, size, yy, xx):
    drift = _value_noise(rng, size, 3)
    sparkle = (rng.random((size, size)) > 0.97).astype(np.float32)
    return _mix((215, 225, 240), (250, 250, 255), np.maximum(drift, sparkle))


_TEXTURES = {"sky": _sky, "grass": _grass, "water": _water, "sand": _sand, "wall": _wall, "snow": _snow}


def stuff_texture(name: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """Texture of stuff class `name` as float32 (size, size, 3) in [0, 255]."""
    if name not in _TEXTURES:
        raise ValueError(f"unknown stuff class {name!r}; known: {sorted(_TEXTURES)}")
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return np.clip(_TEXTURES[name](rng, size, yy, xx), 0, 255).astype(np.float32)
