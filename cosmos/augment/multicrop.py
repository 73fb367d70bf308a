"""Image views: DINO-style multi-crop (reference section 3.3) and the eval / single-crop transforms.

``MultiCrop`` re-implements the reference ``DataAugmentationMulticrop``
(``ExplainableML/cosmos:src/open_clip/transform.py:462-516``): two global crops and ``N`` local crops of
one PIL image, returned as ``[g1, g2, l1, ..., lN]`` normalized ``[3, S, S]`` tensors. Randomness comes
from two streams, exactly as in the reference: torchvision's crop, flip and jitter parameters use the
torch RNG; the apply-or-not coins of jitter, grayscale, blur and solarization and the blur radius use
Python's ``random``. Replaying both streams reproduces the tensors bit for bit.

Every transform here ends in ToTensor + Normalize (float32) by default. With ``uint8=True`` it ends in
``PILToTensor`` instead: the same crop as uint8 pixels ``[3, S, S]``, a quarter of the bytes through the
DataLoader workers' shared memory and over PCIe. :func:`cosmos.training.device_batch.normalize_images` then
applies the ToTensor + Normalize arithmetic after the host-to-device copy; on CPU the result is bit-identical
to the float path (``tests/training/test_loader_device.py``).
"""

from __future__ import annotations

import random
from typing import Sequence

import torch
from PIL import Image, ImageFilter, ImageOps
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
REFERENCE_GLOBAL_SIZE = 224
REFERENCE_BLUR_RADIUS = (0.1, 2.0)
# open_clip's AugmentationCfg default scale for the plain (non-multicrop) training transform.
OPEN_CLIP_TRAIN_SCALE = (0.9, 1.0)


class RandomApplyColorJitter:
    """ColorJitter applied when ``random.random() < p`` (reference ``transform.py:245-258``)."""

    def __init__(self, brightness: float, contrast: float, saturation: float, hue: float, p: float):
        self.jitter = T.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue)
        self.p = p

    def __call__(self, img: Image.Image) -> Image.Image:
        return self.jitter(img) if random.random() < self.p else img


class RandomGray:
    """3-channel grayscale applied when ``random.random() < p`` (reference ``transform.py:261-274``)."""

    def __init__(self, p: float):
        self.gray = T.Grayscale(num_output_channels=3)
        self.p = p

    def __call__(self, img: Image.Image) -> Image.Image:
        return self.gray(img) if random.random() < self.p else img


class GaussianBlur:
    """PIL Gaussian blur with radius ``U(radius_min, radius_max)``, fired when ``random.random() <= p`` (DINO)."""

    def __init__(self, p: float, radius_min: float = 0.1, radius_max: float = 2.0):
        self.p = p
        self.radius_min = radius_min
        self.radius_max = radius_max

    def __call__(self, img: Image.Image) -> Image.Image:
        # ``<=`` (not ``<``) is the reference's comparison; it makes p=1.0 fire with certainty.
        if random.random() > self.p:
            return img
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(self.radius_min, self.radius_max)))


class Solarization:
    """``PIL.ImageOps.solarize`` (threshold 128) fired when ``random.random() < p`` (DINO)."""

    def __init__(self, p: float):
        self.p = p

    def __call__(self, img: Image.Image) -> Image.Image:
        return ImageOps.solarize(img) if random.random() < self.p else img


def _to_rgb(img: Image.Image) -> Image.Image:
    return img.convert("RGB")


def _normalize() -> T.Compose:
    return T.Compose([T.ToTensor(), T.Normalize(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)])


def _finish(uint8: bool) -> T.Compose | T.PILToTensor:
    """The last step of a transform: normalized float32 ``[3, S, S]``, or with ``uint8`` the raw RGB pixels
    ``[3, S, S]`` that ``cosmos.training.device_batch.normalize_images`` normalizes later, on the device."""
    return T.PILToTensor() if uint8 else _normalize()


def scale_blur_radius(size: int, reference_size: int = REFERENCE_GLOBAL_SIZE,
                      radius: Sequence[float] = REFERENCE_BLUR_RADIUS) -> tuple[float, float]:
    """Rescale the blur radius range so it blurs the same *fraction* of a ``size``-px crop as at 224 px.

    The reference radius U(0.1, 2.0) is in pixels: at a 32-px crop, 2 px removes most of the image's
    detail, which at 224 px would need a 14-px radius. Note that PIL leaves an image unchanged for radii
    below about 0.1 px, so the lower end of a rescaled range may effectively mean "no blur".
    """
    factor = size / reference_size
    return (radius[0] * factor, radius[1] * factor)


class MultiCrop:
    """Two global and ``local_crops_number`` local crops of one image (reference section 3.3).

    Args:
        global_size, local_size: output side of global / local crops (reference 224 / 96).
        local_crops_number: number of local crops ``N`` (reference 6).
        crop_scale: area fraction splitting the scale ranges: global ``(crop_scale, 1)``, local
            ``(0.05, crop_scale)`` (reference 0.4).
        blur_radius: ``(min, max)`` blur radius in pixels for every crop. The reference's (0.1, 2.0) is
            kept as default for fidelity; see :func:`scale_blur_radius` for small images.
        uint8: return uint8 pixels instead of normalized float32 crops (module docstring); the random draws
            and the crops are the same.

    Returns a list ``[g1, g2, l1..lN]`` of tensors ``[3, global_size, global_size]`` (globals) and
    ``[3, local_size, local_size]`` (locals).
    """

    def __init__(self, *, global_size: int = 224, local_size: int = 96, local_crops_number: int = 6,
                 crop_scale: float = 0.4, blur_radius: Sequence[float] = REFERENCE_BLUR_RADIUS,
                 uint8: bool = False):
        if not 0.05 < crop_scale < 1.0:
            raise ValueError(f"crop_scale must lie in (0.05, 1), got {crop_scale}")
        self.local_crops_number = local_crops_number
        radius_min, radius_max = blur_radius

        def flip_and_color_jitter() -> list:
            return [
                T.RandomHorizontalFlip(p=0.5),
                RandomApplyColorJitter(0.4, 0.4, 0.2, 0.1, p=0.8),
                RandomGray(p=0.2),
            ]

        def crop(size: int, scale: tuple[float, float]) -> list:
            return [T.RandomResizedCrop(size, scale=scale, interpolation=InterpolationMode.BICUBIC), _to_rgb]

        global_scale = (crop_scale, 1.0)
        self.global1 = T.Compose([
            *crop(global_size, global_scale), *flip_and_color_jitter(),
            GaussianBlur(1.0, radius_min, radius_max), _finish(uint8),
        ])
        self.global2 = T.Compose([
            *crop(global_size, global_scale), *flip_and_color_jitter(),
            GaussianBlur(0.1, radius_min, radius_max), Solarization(0.2), _finish(uint8),
        ])
        self.local = T.Compose([
            *crop(local_size, (0.05, crop_scale)), *flip_and_color_jitter(),
            GaussianBlur(0.5, radius_min, radius_max), _finish(uint8),
        ])

    def __call__(self, image: Image.Image) -> list[torch.Tensor]:
        crops = [self.global1(image), self.global2(image)]
        crops.extend(self.local(image) for _ in range(self.local_crops_number))
        return crops


def eval_transform(size: int = 224) -> T.Compose:
    """Resize the shortest side to ``size`` (bicubic), center-crop, normalize (reference ``transform.py:368-399``)."""
    return T.Compose([
        T.Resize(size, interpolation=InterpolationMode.BICUBIC),
        T.CenterCrop(size),
        _to_rgb,
        _normalize(),
    ])


def single_crop_transform(size: int = 224, scale: Sequence[float] = OPEN_CLIP_TRAIN_SCALE,
                          uint8: bool = False) -> T.Compose:
    """One random crop for CLIP training without multi-crop; returns ``[3, size, size]``.

    Without ``--use-imagecrop-aug`` the reference falls back to open_clip's ``image_transform(is_train=True)``
    with the default ``AugmentationCfg``: ``RandomResizedCrop(size, scale=(0.9, 1.0), bicubic)``, RGB,
    ToTensor, Normalize, with no jitter, grayscale or flip. This re-creates that transform; ``uint8`` ends it
    in uint8 pixels instead of ToTensor + Normalize (module docstring).
    """
    return T.Compose([
        T.RandomResizedCrop(size, scale=tuple(scale), interpolation=InterpolationMode.BICUBIC),
        _to_rgb,
        _finish(uint8),
    ])
