"""The closed vocabulary of the synthetic benchmark: thing shapes, colours, sizes, stuff and positions.

Every class name used by any written format (captions, segmentation class files, classification folders)
comes from here, so a caption can only name what the renderer can draw.
"""

from __future__ import annotations

# Thing classes. Synonyms (after the first name) feed the segmentation class-name files, like SCLIP's cls_*.txt.
SHAPES: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
    "diamond": ("diamond", "rhombus"),
    "pentagon": ("pentagon",),
    "hexagon": ("hexagon",),
    "star": ("star",),
    "cross": ("cross", "plus sign"),
    "ring": ("ring", "donut"),
    "crescent": ("crescent", "moon"),
    "heart": ("heart",),
    "semicircle": ("semicircle", "half circle"),
}

# Saturated RGB prototypes; the renderer jitters each object's colour a little around them.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 30),
    "green": (40, 170, 50),
    "cyan": (30, 200, 210),
    "blue": (30, 60, 220),
    "purple": (140, 40, 190),
    "pink": (245, 120, 190),
}

# Object radius as a fraction of the image side (was 0.10 / 0.16 / 0.25: too small to tell shapes apart after the 64 -> 32 px crop).
SIZES: dict[str, float] = {"small": 0.14, "medium": 0.22, "large": 0.32}

# Stuff (background) classes, each with its own procedural texture (textures.py).
STUFF: tuple[str, ...] = ("sky", "grass", "water", "sand", "wall", "snow")

# 3x3 grid of positions, indexed [row][col] of the object's centre.
POSITIONS: tuple[tuple[str, ...], ...] = (
    ("top left", "top", "top right"),
    ("left", "center", "right"),
    ("bottom left", "bottom", "bottom right"),
)

SHAPE_NAMES: tuple[str, ...] = tuple(SHAPES)
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
SIZE_NAMES: tuple[str, ...] = tuple(SIZES)


def position_name(cx: float, cy: float) -> str:
    """Name of the 3x3 grid cell holding the normalised centre (cx, cy) in [0, 1)^2."""
    col = min(int(cx * 3), 2)
    row = min(int(cy * 3), 2)
    return POSITIONS[row][col]


def check_names(kind: str, names: list[str] | tuple[str, ...], known: tuple[str, ...]) -> tuple[str, ...]:
    """Validate a user-chosen subset of the vocabulary; unknown names stop with the parameter named."""
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"data.generator.{kind}: unknown name(s) {unknown}; choose from {list(known)}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"data.generator.{kind}: duplicate names in {list(names)}")
    return tuple(names)
