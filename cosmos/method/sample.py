"""Per-sample views and batch collation for training (reference 3.2 text crop, 3.3 multi-crop and collation).

:class:`SampleTransform` turns one decoded webdataset sample (a PIL image and its caption json) into the
image views and caption strings the switches ask for; :func:`collate` stacks ``B`` of them into the batch
layout the model and the objective expect::

    images:    [g1 [B,3,G,G], g2 [B,3,G,G], l1 [B,3,L,L], ..., lN]     # crop-major list (reference train.py:103-118)
    texts:     LongTensor [k*B, ctx], rows [G1(B), G2(B), L1(B), ...]   # caption-major (reference train.py:123-128)
    text_ends: LongTensor [k*B], argmax(texts) + 1 per row, on the host # the EOT ends, caption-major as texts

The crops are normalized float32, or uint8 pixels with ``SampleTransform(uint8=True)``, which
:func:`cosmos.training.data.batch_to` normalizes after the host-to-device copy. ``text_ends`` lets the text
tower cut rows after their EOT without reading the ends back from the device (a host sync mid-forward;
:func:`cosmos.models.towers.text_forward`); ``batch_to`` leaves it on the host.

Tokenization happens in :func:`collate`, not per sample, so the transform stays tokenizer-free.
"""

from __future__ import annotations

import json
import random
from typing import Any, Mapping, Sequence

import torch
from PIL import Image

from cosmos.augment.multicrop import MultiCrop, scale_blur_radius, single_crop_transform
from cosmos.method.switches import DistillSwitches
from cosmos.text.textcrop import sample_captions
from cosmos.text.tokenizer import tokenize_caption_batch

Sample = tuple[list[torch.Tensor], list[str]]


class SampleTransform:
    """``(PIL image, caption record) -> ([crop tensors], [caption strings])`` for one training sample.

    Args:
        switches: the ``distill`` group. ``multi_crop`` chooses :class:`MultiCrop` (``[g1, g2, l1..lN]``)
            or :func:`single_crop_transform` (``[g1]``, open_clip's default RandomResizedCrop scale 0.9-1);
            :attr:`DistillSwitches.caption_mode` and ``num_captions`` drive :func:`sample_captions`.
        rng: ``random.Random``-compatible source of the caption draws. The default, the module ``random``,
            is what the reference uses; DataLoader workers seed it per worker.
        uint8: crops as uint8 pixels ``[3, S, S]`` instead of normalized float32 (the same crops and draws;
            see :mod:`cosmos.augment.multicrop`). For accelerator training, where the normalization runs on
            the device after the copy (:func:`cosmos.training.data.batch_to`); on CPU the float default keeps
            it in the DataLoader workers, in parallel.

    The multi-crop coins use the module ``random`` and the crop parameters the torch RNG (as the
    reference); the image is transformed before the captions are drawn. The blur radius is rescaled to
    the global crop size (:func:`scale_blur_radius`; identical to the reference at 224 px).
    """

    def __init__(self, switches: DistillSwitches, rng: Any = random, uint8: bool = False):
        switches.validate()
        self.switches = switches
        self.rng = rng
        self.uint8 = uint8
        if switches.multi_crop:
            self.image_transform = MultiCrop(
                global_size=switches.global_crop_size, local_size=switches.local_crop_size,
                local_crops_number=switches.local_crops, crop_scale=switches.crop_scale,
                blur_radius=scale_blur_radius(switches.global_crop_size), uint8=uint8,
            )
        else:
            single = single_crop_transform(switches.global_crop_size, uint8=uint8)
            self.image_transform = lambda image: [single(image)]

    def __call__(self, image: Image.Image, record: Mapping[str, Any] | str | bytes) -> Sample:
        """Return ``num_image_views`` tensors ``[3, S, S]`` and ``num_captions`` strings ``[G1, G2, L1..]``."""
        if isinstance(record, (str, bytes)):
            record = json.loads(record)
        crops = self.image_transform(image)
        captions = sample_captions(record, self.switches.num_captions, self.switches.caption_mode, self.rng)
        return crops, captions


def collate(samples: Sequence[Sample], tokenizer: Any) -> dict[str, Any]:
    """Stack ``B`` samples into the batch of the module docstring: ``images`` (crop-major ``[B,3,S,S]`` views, the
    crops' dtype), ``texts`` (LongTensor ``[k*B, ctx]``) and ``text_ends`` (LongTensor ``[k*B]``).

    ``tokenizer`` maps ``list[str]`` to ``[n, ctx]`` ids (:func:`cosmos.text.build_tokenizer`). ``text_ends`` is
    the 1-based EOT position of every row, ``argmax + 1`` as the text tower computes it (EOT is the largest id).
    """
    if not samples:
        raise ValueError("collate needs at least one sample")
    num_views = {len(crops) for crops, _ in samples}
    if len(num_views) != 1:
        raise ValueError(f"every sample must carry the same number of image views, got {sorted(num_views)}")
    images = [torch.stack(view) for view in zip(*(crops for crops, _ in samples))]
    texts = tokenize_caption_batch(tokenizer, [captions for _, captions in samples])
    return {"images": images, "texts": texts, "text_ends": texts.argmax(dim=-1) + 1}
