"""Text cropping: turn one image's caption set into ``k`` caption strings (reference section 3.2).

COSMOS augments text the way DINO augments images. Each image carries seven DreamLIP captions (1 raw
alt text, 3 short and 3 long VLM captions), pre-split into sentence lists. From their concatenation the
sampler draws two *global* captions of 1-5 random sentences and ``k - 2`` *local* captions of one
sentence each. The output order ``[G1, G2, L1, ..., L_{k-2}]`` is the caption-major order that the
model and the losses expect.

Fidelity to the reference (``ExplainableML/cosmos:src/training/data.py:208-270``) is at the level of the
random stream: with a ``random.Random`` in the same state, :func:`sample_captions` consumes the same draws
in the same order (``randint``, ``randint``, ``sample``, ``sample``, ``sample``) and returns the same strings.
"""

from __future__ import annotations

import random
import re
from typing import Any, Mapping, Sequence

RAW_FIELD = "raw_caption"
# Concatenation order of the reference's ``captions_list`` (differs from FLAIR's order; it matters
# because ``random.sample`` draws positions, so a different order gives different strings).
DREAMLIP_FIELDS = (
    RAW_FIELD,
    "shortIB_captions",
    "shortSV_captions",
    "shortLLA_captions",
    "longIB_captions",
    "longSV_captions",
    "longLLA_captions",
)
PIXELPROSE_ALT_FIELD = "original_caption"
PIXELPROSE_VLM_FIELD = "caption"
SAMPLING_MODES = ("textcrop", "textcrop_pixelprose", "raw", "whole")

SENTENCE_JOIN = ". "
_SPLIT_PATTERN = re.compile(r"\n|</s>|\.")
_MAX_GLOBAL_SENTENCES = 5


def split_caption(text: str) -> list[str]:
    """Split a caption into sentences on ``\\n``, ``</s>`` or ``.``; strip and drop empty pieces (section 3.1)."""
    return [piece.strip() for piece in _SPLIT_PATTERN.split(text) if piece.strip()]


def random_sample_from_list(items: Sequence[str], num: int, rng: Any = random) -> list[str]:
    """Draw ``num`` items; with too few items, repeat the whole list (reference ``data.py:263-270``).

    If ``len(items) >= num`` this is ``rng.sample(items, num)`` (no replacement, random order). Otherwise
    it returns ``num // n`` full copies of the list in its original order followed by
    ``rng.sample(items, num % n)``.
    """
    items = list(items)
    n = len(items)
    if n == 0:
        raise ValueError("cannot sample captions from an empty sentence list")
    if n >= num:
        return rng.sample(items, num)
    return items * (num // n) + rng.sample(items, num % n)


def _sentence_list(sample: Mapping[str, Any], field: str) -> list[str]:
    if field not in sample:
        raise KeyError(f"caption sample is missing the field {field!r} (has {sorted(sample)})")
    value = sample[field]
    if not isinstance(value, list):
        # The reference concatenates fields with ``+``; a raw string would silently be cut into characters.
        raise TypeError(
            f"caption field {field!r} is a {type(value).__name__}; captions must be pre-split sentence "
            "lists (run split_caption over every field when building the shards)"
        )
    return value


def _textcrop(captions_list: list[str], k: int, rng: Any) -> list[str]:
    if k < 2:
        raise ValueError(f"text cropping needs k >= 2 (two global captions), got k={k}")
    # Draw order pinned by the reference: both lengths first, then the three samples.
    num_first = rng.randint(1, _MAX_GLOBAL_SENTENCES)
    num_second = rng.randint(1, _MAX_GLOBAL_SENTENCES)
    first = SENTENCE_JOIN.join(random_sample_from_list(captions_list, num_first, rng))
    second = SENTENCE_JOIN.join(random_sample_from_list(captions_list, num_second, rng))
    # One independent draw for all locals: a local sentence may repeat part of a global caption.
    local = random_sample_from_list(captions_list, k - 2, rng)
    return [first, second, *local]


def _raw(sample: Mapping[str, Any], k: int) -> list[str]:
    if RAW_FIELD in sample:
        alt_text = SENTENCE_JOIN.join(_sentence_list(sample, RAW_FIELD))
    elif PIXELPROSE_ALT_FIELD in sample:
        alt_text = str(sample[PIXELPROSE_ALT_FIELD])
    else:
        raise KeyError(
            f"mode 'raw' needs {RAW_FIELD!r} (DreamLIP) or {PIXELPROSE_ALT_FIELD!r} (PixelProse); "
            f"sample has {sorted(sample)}"
        )
    return [alt_text] * k


def _whole(sample: Mapping[str, Any], k: int, rng: Any) -> list[str]:
    fields = [field for field in DREAMLIP_FIELDS if field in sample]
    if not fields:
        raise KeyError(f"mode 'whole' needs at least one of {DREAMLIP_FIELDS}; sample has {sorted(sample)}")
    captions = [SENTENCE_JOIN.join(_sentence_list(sample, field)) for field in fields]
    captions = [caption for caption in captions if caption]
    # A random permutation first, so no field is pinned to the G1 slot that feeds the cross-attention
    # keys; past one full pass, fill with the reference's repetition rule.
    first_pass = rng.sample(captions, min(k, len(captions)))
    if k <= len(captions):
        return first_pass
    return first_pass + random_sample_from_list(captions, k - len(captions), rng)


def sample_captions(sample: Mapping[str, Any], k: int, mode: str = "textcrop", rng: Any = random) -> list[str]:
    """Return ``k`` caption strings ``[G1, G2, L1..L_{k-2}]`` for one image (reference ``sample_dict``).

    Args:
        sample: the decoded per-image json. DreamLIP samples hold the seven :data:`DREAMLIP_FIELDS` as
            sentence lists; PixelProse samples hold ``original_caption`` and ``caption`` as strings.
        k: number of captions (reference ``--num-sampled-captions 8``).
        mode: ``textcrop`` (reference, ``data.py:238-246``); ``textcrop_pixelprose`` (same procedure on
            ``[original_caption] + split_caption(caption)``, ``data.py:247-253``); ``raw`` (the alt text
            repeated ``k`` times, for a plain CLIP baseline); ``whole`` (whole captions, no sentence
            cropping: each available DreamLIP field joined with ``'. '``; draw rule = a random
            permutation of the first ``min(k, n)`` captions, then :func:`random_sample_from_list` for
            the remaining ``k - n``).
        rng: a ``random.Random``-compatible object; the module ``random`` by default, as in the reference
            dataloader workers.
    """
    if mode == "textcrop":
        captions_list = [sentence for field in DREAMLIP_FIELDS for sentence in _sentence_list(sample, field)]
        return _textcrop(captions_list, k, rng)
    if mode == "textcrop_pixelprose":
        for field in (PIXELPROSE_ALT_FIELD, PIXELPROSE_VLM_FIELD):
            if field not in sample:
                raise KeyError(f"PixelProse sample is missing the field {field!r} (has {sorted(sample)})")
        captions_list = [sample[PIXELPROSE_ALT_FIELD], *split_caption(sample[PIXELPROSE_VLM_FIELD])]
        return _textcrop(captions_list, k, rng)
    if mode == "raw":
        return _raw(sample, k)
    if mode == "whole":
        return _whole(sample, k, rng)
    raise ValueError(f"unknown caption sampling mode {mode!r}; expected one of {SAMPLING_MODES}")
