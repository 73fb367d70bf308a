"""Scene sampling and rendering for the synthetic benchmark.

A scene is 1-2 textured stuff regions plus 1-4 thing objects, each with its class's surface pattern
(patterns.py), with exactly one *dominant* object: the
largest by visible mask area, by a margin. The dominant object is drawn last (on top) so that occlusion
never makes it smaller; every other object keeps at least `min_visible` of its own pixels so that a
caption naming it stays true. This mirrors the phenomenon COSMOS attacks: alt text names only the
dominant object, long synthetic captions describe everything (see captions.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from cosmos.data.synthetic import vocab
from cosmos.data.synthetic.patterns import surface_factor
from cosmos.data.synthetic.shapes import rasterize
from cosmos.data.synthetic.textures import stuff_texture

MIN_IMAGE_SIZE = 32
MAX_OBJECTS = 6
_DOMINANCE_MARGIN = 1.2  # dominant visible area must exceed every other object's by this factor
_MAX_TRIES = 200
SURFACES = ("patterned", "flat")


@dataclass(frozen=True)
class SceneConfig:
    """Validated generator parameters (the `data.generator` config section)."""

    image_size: int = 64
    min_objects: int = 1
    max_objects: int = 4
    max_stuff: int = 2
    shapes: tuple[str, ...] = vocab.SHAPE_NAMES
    colours: tuple[str, ...] = vocab.COLOUR_NAMES
    stuff: tuple[str, ...] = vocab.STUFF
    min_visible: float = 0.5
    surfaces: str = "patterned"  # "patterned": each shape class has its own surface pattern (patterns.py); "flat"

    def __post_init__(self) -> None:
        p = "data.generator"
        if self.image_size < MIN_IMAGE_SIZE:
            raise ValueError(
                f"{p}.image_size={self.image_size} is too small: shapes are unrecognisable below "
                f"{MIN_IMAGE_SIZE} px; set it to at least {MIN_IMAGE_SIZE}"
            )
        if self.min_objects < 1:
            raise ValueError(f"{p}.min_objects={self.min_objects}: every scene needs at least 1 object")
        if not self.min_objects <= self.max_objects <= MAX_OBJECTS:
            raise ValueError(
                f"{p}.max_objects={self.max_objects}: need min_objects ({self.min_objects}) <= "
                f"max_objects <= {MAX_OBJECTS}"
            )
        if self.max_stuff not in (1, 2):
            raise ValueError(f"{p}.max_stuff={self.max_stuff}: scenes have 1 or 2 stuff regions")
        object.__setattr__(self, "shapes", vocab.check_names("shapes", self.shapes, vocab.SHAPE_NAMES))
        object.__setattr__(self, "colours", vocab.check_names("colours", self.colours, vocab.COLOUR_NAMES))
        object.__setattr__(self, "stuff", vocab.check_names("stuff", self.stuff, vocab.STUFF))
        if len(self.shapes) < self.max_objects:
            raise ValueError(
                f"{p}.shapes has {len(self.shapes)} names but max_objects={self.max_objects}: objects in a "
                "scene have distinct shapes, so list at least max_objects shapes"
            )
        if len(self.colours) < 2:
            raise ValueError(f"{p}.colours needs at least 2 colours (hard negatives swap colours)")
        if len(self.stuff) < self.max_stuff:
            raise ValueError(f"{p}.stuff has fewer names than max_stuff={self.max_stuff}")
        if not 0.0 < self.min_visible <= 1.0:
            raise ValueError(f"{p}.min_visible={self.min_visible} must lie in (0, 1]")
        if self.surfaces not in SURFACES:
            raise ValueError(f"{p}.surfaces={self.surfaces!r}: choose one of {list(SURFACES)}")


@dataclass(frozen=True)
class Thing:
    shape: str
    colour: str
    size: str
    cx: float  # centre in pixels
    cy: float
    angle: float
    position: str  # 3x3 grid cell name of the centre


@dataclass
class Scene:
    """A sampled scene. `things[0]` is the dominant object; `stuff` lists regions top to bottom."""

    things: list[Thing]
    stuff: list[str]
    boundary: float | None  # y (pixels) of the stuff boundary for two regions
    image: np.ndarray = field(repr=False)  # (S, S, 3) uint8
    thing_map: np.ndarray = field(repr=False)  # (S, S) int8: index into `things`, -1 where stuff shows
    stuff_map: np.ndarray = field(repr=False)  # (S, S) int8: index into `stuff`
    areas: list[int] = field(default_factory=list)  # visible pixels of each thing

    @property
    def dominant(self) -> Thing:
        return self.things[0]


def _sample_things(rng: np.random.Generator, cfg: SceneConfig, dominant_shape: str | None) -> list[Thing]:
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    shapes = list(rng.choice(cfg.shapes, size=n, replace=False))
    if dominant_shape is not None:
        if dominant_shape in shapes:
            shapes.remove(dominant_shape)
        else:
            shapes.pop()
        shapes.insert(0, dominant_shape)
    dom_size = "large" if n > 1 and rng.random() < 0.7 else str(rng.choice(["medium", "large"]))
    smaller = [s for s in vocab.SIZE_NAMES if vocab.SIZES[s] < vocab.SIZES[dom_size]]
    sizes = [dom_size] + [str(rng.choice(smaller)) for _ in range(n - 1)]
    s = cfg.image_size
    things = []
    for shape, size in zip(shapes, sizes):
        r = vocab.SIZES[size] * s
        cx, cy = rng.uniform(r, s - r, size=2)
        angle = float(rng.uniform(-0.35, 0.35))
        colour = str(rng.choice(cfg.colours))
        pos = vocab.position_name(cx / s, cy / s)
        things.append(Thing(str(shape), colour, size, float(cx), float(cy), angle, pos))
    return things


def _sample_stuff(rng: np.random.Generator, cfg: SceneConfig, background: str | None) -> tuple[list[str], float | None]:
    if background is not None:
        return [background], None
    k = int(rng.integers(1, cfg.max_stuff + 1))
    names = [str(x) for x in rng.choice(cfg.stuff, size=k, replace=False)]
    if "sky" in names:  # sky only ever sits above the other region
        names.remove("sky")
        names.insert(0, "sky")
    boundary = float(rng.uniform(0.35, 0.65) * cfg.image_size) if k == 2 else None
    return names, boundary


def _render_stuff(rng, cfg: SceneConfig, names: list[str], boundary: float | None):
    s = cfg.image_size
    image = stuff_texture(names[0], rng, s)
    stuff_map = np.zeros((s, s), dtype=np.int8)
    if boundary is not None:
        xx = np.arange(s) + 0.5
        wave = boundary + 0.04 * s * np.sin(xx * rng.uniform(0.1, 0.3) + rng.uniform(0, 2 * math.pi))
        lower = (np.arange(s)[:, None] + 0.5) >= wave[None, :]
        image = np.where(lower[..., None], stuff_texture(names[1], rng, s), image)
        stuff_map[lower] = 1
    return image, stuff_map


def _layout(cfg: SceneConfig, things: list[Thing]) -> tuple[np.ndarray, list[int]] | None:
    """Thing map with the dominant drawn last, or None when the layout breaks the dominance rules."""
    s = cfg.image_size
    thing_map = np.full((s, s), -1, dtype=np.int8)
    full = []
    for idx in list(range(1, len(things))) + [0]:
        t = things[idx]
        mask = rasterize(t.shape, t.cx, t.cy, vocab.SIZES[t.size] * s, t.angle, s)
        full.append((idx, int(mask.sum())))
        thing_map[mask] = idx
    areas = [int((thing_map == i).sum()) for i in range(len(things))]
    for idx, total in full:
        if total == 0 or areas[idx] < cfg.min_visible * total:
            return None
    if any(areas[0] <= _DOMINANCE_MARGIN * a for a in areas[1:]):
        return None
    return thing_map, areas


def sample_scene(rng: np.random.Generator, cfg: SceneConfig, dominant_shape: str | None = None,
                 background: str | None = None) -> Scene:
    """Draw one scene from `rng` (rejection sampling of the layout; deterministic given the rng state).

    `dominant_shape` forces the dominant object's class (the object classification set); `background` makes
    the whole background one stuff class (the scene classification set).
    """
    if dominant_shape is not None and dominant_shape not in cfg.shapes:
        raise ValueError(f"dominant_shape {dominant_shape!r} is not in data.generator.shapes")
    if background is not None and background not in cfg.stuff:
        raise ValueError(f"background {background!r} is not in data.generator.stuff")
    for _ in range(_MAX_TRIES):
        things = _sample_things(rng, cfg, dominant_shape)
        laid = _layout(cfg, things)
        if laid is not None:
            break
    else:
        raise RuntimeError(
            f"could not place {cfg.max_objects} objects with a dominant one in {_MAX_TRIES} tries at "
            f"image_size={cfg.image_size}; lower data.generator.max_objects or min_visible"
        )
    thing_map, areas = laid
    stuff, boundary = _sample_stuff(rng, cfg, background)
    image, stuff_map = _render_stuff(rng, cfg, stuff, boundary)
    for idx, t in enumerate(things):
        rgb = np.asarray(vocab.COLOURS[t.colour], np.float32) + rng.uniform(-12, 12, size=3)
        sel = thing_map == idx
        noise = rng.normal(0, 4, size=(int(sel.sum()), 1))
        if cfg.surfaces == "patterned":
            iy, ix = np.nonzero(sel)
            factor = surface_factor(t.shape, ix + 0.5 - t.cx, iy + 0.5 - t.cy, t.angle, rng)
            image[sel] = rgb[None, :] * factor[:, None] + noise
        else:
            image[sel] = rgb[None, :] + noise
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return Scene(things, stuff, boundary, image, thing_map, stuff_map, areas)


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Independent stream per (seed, split, sample index): sample i never depends on the sample count."""
    split_id = int.from_bytes(split.encode()[:8].ljust(8, b"\0"), "little")
    return np.random.default_rng(np.random.SeedSequence([seed, split_id, index]))
