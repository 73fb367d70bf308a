"""SugarCrepe-style hard negatives for a rendered scene, true by construction.

- replace_att: one object's colour is replaced by a colour it does not have;
- replace_obj: one object's shape is replaced by a shape absent from the scene;
- swap_att: the colours of two differently coloured objects are swapped.
The positive caption names the same objects with their true attributes, so the pair differs only in the
probed attribute.
"""

from __future__ import annotations

import numpy as np

from cosmos.data.synthetic.captions import fix_articles
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
