"""SugarCrepe-style hard negatives for a rendered scene, true by construction.

- replace_att: one object's colour is replaced by a colour it does not have;
- replace_obj: one object's shape is replaced by a shape absent from the scene;
- swap_att: the colours of two differently coloured objects are swapped.
The positive caption names the same objects with their true attributes, so the pair differs only in the
probed attribute.

Feature-suppression probes (:func:`suppression_negatives`, scenes with at least two objects): the paper's
claim is that a CLIP trained on alt text learns the dominant object and suppresses the rest. Each probe
names one object alone and negates one of its facts:

- dominant_obj / minor_obj: the dominant (largest) / a non-dominant object, shape replaced by one absent
  from the scene ("A red star." vs "A red heart.");
- dominant_att / minor_att: the same objects, colour replaced by another colour;
- minor_pos: a non-dominant object, its 3x3 grid position replaced by the mirrored one
  ("A red star in the top left corner." vs "... in the bottom right corner.").

Shapes within a scene are distinct, so each negative is false by construction. dominant_* and minor_*
share their scenes; the gap dominant - minor is the suppression the probe measures (chance 50 each).
"""

from __future__ import annotations

import numpy as np

from cosmos.data.synthetic import vocab
from cosmos.data.synthetic.captions import _WHERE, fix_articles
from cosmos.data.synthetic.scene import Scene, SceneConfig, Thing


def _phrase(colour: str, shape: str) -> str:
    return f"a {colour} {shape}"


def _pair_text(a: str, b: str | None, stuff: str) -> str:
    body = fix_articles(a if b is None else f"{a} and {b}")
    return f"{body[:1].upper()}{body[1:]} on {stuff}."


def _context(scene: Scene, rng: np.random.Generator, target: int) -> int | None:
    """A second object named alongside the target, when the scene has one."""
    others = [i for i in range(len(scene.things)) if i != target]
    return int(rng.choice(others)) if others else None


def hard_negatives(scene: Scene, cfg: SceneConfig, rng: np.random.Generator) -> dict[str, tuple[str, str]]:
    """{probe_type: (caption, negative_caption)} for each type this scene supports."""
    stuff = " and ".join(scene.stuff)
    things: list[Thing] = scene.things
    out = {}

    t = int(rng.integers(len(things)))
    c = _context(scene, rng, t)
    other = None if c is None else _phrase(things[c].colour, things[c].shape)
    new_colour = str(rng.choice([x for x in cfg.colours if x != things[t].colour]))
    out["replace_att"] = (
        _pair_text(_phrase(things[t].colour, things[t].shape), other, stuff),
        _pair_text(_phrase(new_colour, things[t].shape), other, stuff),
    )

    present = {x.shape for x in things}
    absent = [s for s in cfg.shapes if s not in present]
    if absent:
        new_shape = str(rng.choice(absent))
        out["replace_obj"] = (
            _pair_text(_phrase(things[t].colour, things[t].shape), other, stuff),
            _pair_text(_phrase(things[t].colour, new_shape), other, stuff),
        )

    pairs = [(i, j) for i in range(len(things)) for j in range(i + 1, len(things))
             if things[i].colour != things[j].colour]
    if pairs:
        i, j = pairs[int(rng.integers(len(pairs)))]
        a, b = things[i], things[j]
        out["swap_att"] = (
            _pair_text(_phrase(a.colour, a.shape), _phrase(b.colour, b.shape), stuff),
            _pair_text(_phrase(b.colour, a.shape), _phrase(a.colour, b.shape), stuff),
        )
    return out


SUPPRESSION_TYPES: tuple[str, ...] = ("dominant_obj", "minor_obj", "dominant_att", "minor_att", "minor_pos")


def _alone(phrase: str, where: str | None = None) -> str:
    body = fix_articles(phrase if where is None else f"{phrase} {where}")
    return f"{body[:1].upper()}{body[1:]}."


def _mirrored(position: str) -> str | None:
    """The grid cell mirrored through the centre; None for the centre cell."""
    for r, row in enumerate(vocab.POSITIONS):
        if position in row:
            mirror = vocab.POSITIONS[2 - r][2 - row.index(position)]
            return None if mirror == position else mirror
    raise ValueError(f"unknown position {position!r}")


def suppression_negatives(scene: Scene, cfg: SceneConfig, rng: np.random.Generator) -> dict[str, tuple[str, str]]:
    """{probe_type: (caption, negative_caption)} for :data:`SUPPRESSION_TYPES`; empty for one-object scenes."""
    things: list[Thing] = scene.things
    if len(things) < 2:
        return {}
    dom, minor = things[0], things[1 + int(rng.integers(len(things) - 1))]
    absent = [s for s in cfg.shapes if s not in {x.shape for x in things}]
    out = {}
    for name, t in (("dominant", dom), ("minor", minor)):
        if absent:
            out[f"{name}_obj"] = (_alone(_phrase(t.colour, t.shape)),
                                  _alone(_phrase(t.colour, str(rng.choice(absent)))))
        colour = str(rng.choice([c for c in cfg.colours if c != t.colour]))
        out[f"{name}_att"] = (_alone(_phrase(t.colour, t.shape)), _alone(_phrase(colour, t.shape)))
    mirror = _mirrored(minor.position)
    if mirror is not None:
        phrase = _phrase(minor.colour, minor.shape)
        out["minor_pos"] = (_alone(phrase, _WHERE[minor.position]), _alone(phrase, _WHERE[mirror]))
    return {k: out[k] for k in SUPPRESSION_TYPES if k in out}
