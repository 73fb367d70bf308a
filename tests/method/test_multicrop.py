"""Multi-crop matches DataAugmentationMulticrop: structure, coin frequencies, determinism (fidelity check 8)."""

import math
import random

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from cosmos.augment import MultiCrop, eval_transform, scale_blur_radius, single_crop_transform
from cosmos.augment.multicrop import GaussianBlur, RandomApplyColorJitter, RandomGray, Solarization

DRAWS = 3000


def _image(height=40, width=52, seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _only(compose, cls):
    found = [t for t in compose.transforms if isinstance(t, cls)]
    assert len(found) <= 1
    return found[0] if found else None


def _fire_rate(transform, image):
    # Every augmentation returns its input object untouched when its coin says "no".
    return sum(transform(image) is not image for _ in range(DRAWS)) / DRAWS


def _assert_rate(rate, p):
    sigma = math.sqrt(p * (1 - p) / DRAWS)
    assert abs(rate - p) <= 3 * sigma, (rate, p)


@pytest.fixture(scope="module")
def multicrop():
    return MultiCrop(global_size=32, local_size=16, local_crops_number=6)


def test_output_views_and_shapes(multicrop):
    crops = multicrop(_image())
    assert len(crops) == 8
    assert [tuple(c.shape) for c in crops] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 6


def test_crop_sizes_and_scales(multicrop):
    for compose, size, scale in [(multicrop.global1, 32, (0.4, 1.0)), (multicrop.global2, 32, (0.4, 1.0)),
                                 (multicrop.local, 16, (0.05, 0.4))]:
        crop = _only(compose, T.RandomResizedCrop)
        assert crop.size == (size, size) and crop.scale == scale
        assert crop.interpolation == T.InterpolationMode.BICUBIC
        normalize = compose.transforms[-1].transforms[-1]
        assert normalize.mean == (0.48145466, 0.4578275, 0.40821073)
        assert normalize.std == (0.26862954, 0.26130258, 0.27577711)


@pytest.mark.parametrize("branch, blur_p, solarize_p", [("global1", 1.0, None), ("global2", 0.1, 0.2),
                                                        ("local", 0.5, None)])
def test_coin_frequencies(multicrop, branch, blur_p, solarize_p):
    random.seed(0)
    torch.manual_seed(0)
    compose = getattr(multicrop, branch)
    image = _image(8, 8)
    flip = _only(compose, T.RandomHorizontalFlip)
    jitter, gray = _only(compose, RandomApplyColorJitter), _only(compose, RandomGray)
    blur, solarize = _only(compose, GaussianBlur), _only(compose, Solarization)
    assert (flip.p, jitter.p, gray.p, blur.p) == (0.5, 0.8, 0.2, blur_p)
    assert (blur.radius_min, blur.radius_max) == (0.1, 2.0)
    _assert_rate(_fire_rate(flip, image), 0.5)
    _assert_rate(_fire_rate(jitter, image), 0.8)
    _assert_rate(_fire_rate(gray, image), 0.2)
    _assert_rate(_fire_rate(blur, image), blur_p)
    if solarize_p is None:
        assert solarize is None
    else:
        _assert_rate(_fire_rate(solarize, image), solarize_p)


def test_blur_fires_at_equality_and_solarize_does_not(monkeypatch):
    monkeypatch.setattr(random, "random", lambda: 0.5)
    image = _image(8, 8)
    assert GaussianBlur(0.5)(image) is not image  # fires when random() <= p
    assert Solarization(0.5)(image) is image  # fires only when random() < p


def test_same_rng_state_gives_identical_tensors(multicrop):
    def run(seed):
        random.seed(seed)
        torch.manual_seed(seed)
        return multicrop(_image())

    first, again, other = run(7), run(7), run(8)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


def test_eval_and_single_crop_transforms():
    image = _image(40, 60)
    assert eval_transform(32)(image).shape == (3, 32, 32)
    crop = _only(single_crop_transform(24), T.RandomResizedCrop)
    assert crop.scale == (0.9, 1.0) and single_crop_transform(24)(image).shape == (3, 24, 24)


def test_blur_radius_is_configurable():
    radius = scale_blur_radius(32)
    assert radius == pytest.approx((0.1 * 32 / 224, 2.0 * 32 / 224))
    mc = MultiCrop(global_size=32, local_size=16, blur_radius=radius)
    blur = _only(mc.local, GaussianBlur)
    assert (blur.radius_min, blur.radius_max) == radius
