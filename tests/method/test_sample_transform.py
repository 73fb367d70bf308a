"""SampleTransform and collate: views and captions per config, seeded replay, the batch layout (reference 3.2-3.3)."""

from __future__ import annotations

import io
import json
import random
import tarfile

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from cosmos.config.compose import compose_params
from cosmos.method import DistillSwitches, SampleTransform, collate
from cosmos.text import build_tokenizer
from tests.conftest import REPO_ROOT

DISTILL_OPTIONS = sorted(p.stem for p in (REPO_ROOT / "conf" / "distill").glob("*.yaml"))
FIELDS = ("raw_caption", "shortIB_captions", "longIB_captions", "shortSV_captions", "longSV_captions",
          "shortLLA_captions", "longLLA_captions")
CONTEXT = 24  # cosmos-tiny


def image(seed: int = 0) -> Image.Image:
    """A 64x64 RGB noise image, the size of the synthetic benchmark's images."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8))


def record(seed: int = 0) -> dict[str, list[str]]:
    """A caption json with the seven DreamLIP fields as sentence lists (what cosmos.data.shard writes)."""
    return {field: [f"{field} sentence {i} of sample {seed}" for i in range(1 + j % 3)]
            for j, field in enumerate(FIELDS)}


def switches_for(option: str, *overrides: str) -> DistillSwitches:
    params = yaml.safe_load(compose_params([f"distill={option}", *overrides]))
    return DistillSwitches.from_params(params["distill"])


def make_batch(switches: DistillSwitches, batch_size: int = 4, seed: int = 0) -> dict:
    """A collated batch of ``batch_size`` samples, reproducible from ``seed``."""
    random.seed(seed)
    torch.manual_seed(seed)
    transform = SampleTransform(switches)
    samples = [transform(image(i), record(i)) for i in range(batch_size)]
    return collate(samples, build_tokenizer(CONTEXT))


@pytest.mark.parametrize("option", DISTILL_OPTIONS)
def test_views_and_captions_per_config(option):
    switches = switches_for(option)
    crops, captions = SampleTransform(switches)(image(), record())
    g, l = switches.global_crop_size, switches.local_crop_size
    expected = [(3, g, g)] * switches.num_global_crops + [(3, l, l)] * (switches.num_image_views - switches.num_global_crops)
    assert [tuple(c.shape) for c in crops] == expected
    assert len(captions) == switches.num_captions and all(isinstance(c, str) and c for c in captions)
    if switches.caption_mode == "raw":
        assert set(captions) == {". ".join(record()["raw_caption"])}


def test_cosmos_views_are_reference_layout():
    crops, captions = SampleTransform(switches_for("cosmos"))(image(), json.dumps(record()))
    assert [c.shape[-1] for c in crops] == [32, 32] + [16] * 6
    assert len(captions) == 8
    # Locals are single sentences from the concatenated DreamLIP fields.
    sentences = {s for field in FIELDS for s in record()[field]}
    assert set(captions[2:]) <= sentences


@pytest.mark.parametrize("option", ["cosmos", "clip", "clip_long"])
def test_same_seed_same_outputs(option):
    switches = switches_for(option)
    first, second = make_batch(switches, seed=3), make_batch(switches, seed=3)
    assert torch.equal(first["texts"], second["texts"])
    assert all(torch.equal(a, b) for a, b in zip(first["images"], second["images"]))
    other = make_batch(switches, seed=4)
    assert not all(torch.equal(a, b) for a, b in zip(first["images"], other["images"]))


def test_explicit_rng_drives_the_captions():
    switches = switches_for("cosmos")
    a = SampleTransform(switches, rng=random.Random(5))(image(), record())[1]
    b = SampleTransform(switches, rng=random.Random(5))(image(), record())[1]
    assert a == b


@pytest.mark.parametrize("option", DISTILL_OPTIONS)
def test_collate_batch_layout(option):
    switches = switches_for(option)
    batch = make_batch(switches, batch_size=3)
    assert len(batch["images"]) == switches.num_image_views
    assert all(view.shape[0] == 3 for view in batch["images"])
    assert batch["texts"].dtype == torch.long and batch["texts"].shape == (switches.num_captions * 3, CONTEXT)


def test_collate_is_caption_major():
    switches = switches_for("cosmos")
    random.seed(0)
    transform = SampleTransform(switches)
    samples = [transform(image(i), record(i)) for i in range(2)]
    texts = collate(samples, build_tokenizer(CONTEXT))["texts"]
    tokenizer = build_tokenizer(CONTEXT)
    # Row j*B + b holds caption j of sample b.
    assert torch.equal(texts[1], tokenizer([samples[1][1][0]])[0])
    assert torch.equal(texts[2], tokenizer([samples[0][1][1]])[0])
    images = collate(samples, tokenizer)["images"]
    assert torch.equal(images[2][1], samples[1][0][2])


def test_collate_rejects_mixed_view_counts():
    samples = [([torch.zeros(3, 4, 4)], ["a"]), ([torch.zeros(3, 4, 4)] * 2, ["b"])]
    with pytest.raises(ValueError, match="same number of image views"):
        collate(samples, build_tokenizer(CONTEXT))


def test_reads_a_real_training_shard(tiny_shards):
    shard = sorted(tiny_shards.glob("*.tar"))[0]
    with tarfile.open(shard) as tar:
        members = {m.name: m for m in tar.getmembers()}
        key = sorted(name.rsplit(".", 1)[0] for name in members)[0]
        img = Image.open(io.BytesIO(tar.extractfile(members[f"{key}.jpg"]).read())).convert("RGB")
        rec = json.loads(tar.extractfile(members[f"{key}.json"]).read())
    for option in ("cosmos", "clip", "clip_long"):
        crops, captions = SampleTransform(switches_for(option))(img, rec)
        assert len(crops) == switches_for(option).num_image_views and len(captions) == switches_for(option).num_captions
