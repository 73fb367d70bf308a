"""Captions for synthetic scenes, in the DreamLIP column layout that COSMOS trains on (reference 3.1).

- `raw_caption`: alt-text-like, names only the dominant object (the "feature suppression" regime).
- `short{IB,SV,LLA}_captions`: one sentence each, the dominant object and the background.
- `long{IB,SV,LLA}_captions`: every object (size, colour, shape, position) and the background, one fact
  per sentence, in shuffled order; the three "captioners" differ in wording, like InstructBLIP, ShareGPT4V
  and LLaVA-1.5 do.

Sentences never contain a '.', so the reference's `split_caption` recovers exactly these sentences.
"""

from __future__ import annotations

import numpy as np

from cosmos.data.formats.dreamlip import DREAMLIP_COLUMNS
from cosmos.data.synthetic.scene import Scene, Thing

CAPTION_FIELDS = DREAMLIP_COLUMNS

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six")

_WHERE = {
    "top left": "in the top left corner",
    "top": "at the top",
    "top right": "in the top right corner",
    "left": "on the left",
    "center": "in the center",
    "right": "on the right",
    "bottom left": "in the bottom left corner",
    "bottom": "at the bottom",
    "bottom right": "in the bottom right corner",
}

STUFF_PHRASE = {
    "sky": "a blue sky",
    "grass": "green grass",
    "water": "rippling water",
    "sand": "sand",
    "wall": "a brick wall",
    "snow": "snow",
}

_RAW = (
    "{colour} {shape}",
    "a {colour} {shape}",
    "photo of a {colour} {shape}",
    "{shape} icon",
    "{colour} {shape} clipart",
    "a {shape} on a background",
)

_SHORT = {
    "IB": ("a {size} {colour} {shape} on {stuff}", "a {colour} {shape} in front of {stuff}"),
    "SV": ("the image shows a {colour} {shape} against {stuff}", "a {size} {colour} {shape} with {stuff} behind it"),
    "LLA": ("a picture of a {colour} {shape} over {stuff}", "there is a {colour} {shape} on {stuff}"),
}

_OBJECT = {
    "IB": (
        "there is a {size} {colour} {shape} {where}",
        "a {size} {colour} {shape} can be seen {where}",
        "{where_cap}, there is a {size} {colour} {shape}",
    ),
    "SV": (
        "the image features a {size} {shape} colored {colour}, located {where}",
        "{where_cap}, a {colour} {shape} of {size} size is visible",
        "a {colour} {shape}, {size} in size, appears {where}",
    ),
    "LLA": (
        "I can see a {size} {colour} {shape} {where}",
        "{where_cap} is a {colour} {shape} that is {size}",
        "one of the shapes is a {size} {colour} {shape} {where}",
    ),
}

_ONE_STUFF = {
    "IB": ("the background is {stuff}",),
    "SV": ("the scene is set against {stuff}",),
    "LLA": ("behind the shapes there is {stuff}",),
}
_TWO_STUFF = {
    "IB": ("the upper part of the image shows {top}", "the lower part of the image shows {bottom}"),
    "SV": ("the top of the scene is {top}", "the bottom of the scene is {bottom}"),
    "LLA": ("above, there is {top}", "below, there is {bottom}"),
}
_COUNT = {
    "IB": ("there is one object in the image", "there are {n} objects in the image"),
    "SV": ("in total, one shape is visible", "in total, {n} shapes are visible"),
    "LLA": ("I count one shape", "I count {n} shapes"),
}


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def fix_articles(text: str) -> str:
    """'a orange' -> 'an orange': every template writes 'a', the vowel rule is applied once here."""
    words = text.split(" ")
    for i in range(len(words) - 1):
        if words[i] in ("a", "A") and words[i + 1][:1] in "aeiou" and words[i + 1]:
            words[i] = words[i] + "n"
    return " ".join(words)


def _thing_slots(t: Thing) -> dict[str, str]:
    where = _WHERE[t.position]
    return {"size": t.size, "colour": t.colour, "shape": t.shape, "where": where, "where_cap": _cap(where)}


def _stuff_text(scene: Scene) -> str:
    return " and ".join(STUFF_PHRASE[s] for s in scene.stuff)


def long_caption(scene: Scene, style: str, rng: np.random.Generator) -> list[str]:
    """Sentences describing every object and the background, one fact each, in random order."""
    sentences = [_pick(rng, _OBJECT[style]).format(**_thing_slots(t)) for t in scene.things]
    if len(scene.stuff) == 1:
        sentences.append(_pick(rng, _ONE_STUFF[style]).format(stuff=STUFF_PHRASE[scene.stuff[0]]))
    else:
        top, bottom = _TWO_STUFF[style]
        sentences.append(top.format(top=STUFF_PHRASE[scene.stuff[0]]))
        sentences.append(bottom.format(bottom=STUFF_PHRASE[scene.stuff[1]]))
    singular, plural = _COUNT[style]
    sentences.append(singular if len(scene.things) == 1 else plural.format(n=NUMBERS[len(scene.things)]))
    order = rng.permutation(len(sentences))
    return [_cap(fix_articles(sentences[i])) for i in order]


def dreamlip_captions(scene: Scene, rng: np.random.Generator) -> dict[str, list[str]]:
    """All seven DreamLIP caption fields of a scene, each a list of sentences (reference 3.1)."""
    dom = _thing_slots(scene.dominant)
    out = {"raw_caption": [fix_articles(_pick(rng, _RAW).format(**dom))]}
    for style in ("IB", "SV", "LLA"):
        short = _pick(rng, _SHORT[style]).format(stuff=_stuff_text(scene), **dom)
        out[f"short{style}_captions"] = [_cap(fix_articles(short))]
        out[f"long{style}_captions"] = long_caption(scene, style, rng)
    return {k: out[k] for k in CAPTION_FIELDS}


def _object_phrase(t: Thing, rng: np.random.Generator) -> str:
    if rng.random() < 0.5:
        return f"a {t.size} {t.colour} {t.shape}"
    return f"a {t.colour} {t.shape}"


def retrieval_captions(scene: Scene, rng: np.random.Generator, n: int = 5) -> list[str]:
    """`n` COCO-style captions, each naming 1-3 of the scene's objects (and sometimes the background)."""
    captions = []
    for _ in range(n):
        k = int(rng.integers(1, min(3, len(scene.things)) + 1))
        chosen = sorted(rng.choice(len(scene.things), size=k, replace=False))
        phrases = [_object_phrase(scene.things[i], rng) for i in chosen]
        listed = phrases[0] if k == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
        if rng.random() < 0.5:
            text = f"{listed} on {_stuff_text(scene)}"
        else:
            text = f"{listed}"
        captions.append(_cap(fix_articles(text)) + ".")
    return captions
