"""Unit tests of the scene generator: determinism, truthful captions, dominance, parameter errors."""

from __future__ import annotations

import numpy as np
import pytest

from cosmos.data.synthetic import vocab
from cosmos.data.synthetic.captions import CAPTION_FIELDS, dreamlip_captions
from cosmos.data.synthetic.scene import SceneConfig, sample_rng, sample_scene
from cosmos.data.synthetic.shapes import rasterize
from cosmos.data.synthetic.write_benchmarks import segmentation_labels


def test_same_seed_same_scene(scene_cfg):
    a = sample_scene(sample_rng(3, "train", 11), scene_cfg)
    b = sample_scene(sample_rng(3, "train", 11), scene_cfg)
    c = sample_scene(sample_rng(4, "train", 11), scene_cfg)
    assert np.array_equal(a.image, b.image) and a.things == b.things
    assert not np.array_equal(a.image, c.image)


def test_splits_draw_disjoint_streams(scene_cfg):
    train = sample_scene(sample_rng(0, "train", 0), scene_cfg)
    retrieval = sample_scene(sample_rng(0, "retrieval", 0), scene_cfg)
    assert not np.array_equal(train.image, retrieval.image)


@pytest.mark.parametrize("index", range(40))
def test_long_captions_are_true_to_the_mask(scene_cfg, index):
    """Every object a long caption names has pixels of its class; the dominant one is the largest."""
    rng = sample_rng(1, "train", index)
    scene = sample_scene(rng, scene_cfg)
    caps = dreamlip_captions(scene, rng)
    labels = segmentation_labels(scene, scene_cfg, with_background=True)
    areas = {s: int((labels == 1 + scene_cfg.shapes.index(s)).sum()) for s in scene_cfg.shapes}
    for field in ("longIB_captions", "longSV_captions", "longLLA_captions"):
        text = " ".join(caps[field])
        named = [s for s in scene_cfg.shapes if f" {s}" in f" {text}"]
        assert sorted(named) == sorted(t.shape for t in scene.things), (field, text)
        for shape in named:
            assert areas[shape] > 0, (shape, text)
        for thing in scene.things:  # colour and size are stated next to the shape
            assert thing.colour in text and thing.size in text
    dominant = scene.dominant.shape
    assert all(areas[dominant] > areas[t.shape] for t in scene.things[1:])
    assert dominant in caps["raw_caption"][0]
    others = [t.shape for t in scene.things[1:]]
    assert not any(f" {s}" in f" {caps['raw_caption'][0]}" for s in others), "alt text names only the dominant"


def test_caption_fields_are_sentence_lists(scene_cfg):
    rng = sample_rng(0, "train", 5)
    caps = dreamlip_captions(sample_scene(rng, scene_cfg), rng)
    assert tuple(caps) == CAPTION_FIELDS
    for field, sentences in caps.items():
        assert isinstance(sentences, list) and sentences
        assert all("." not in s and s.strip() == s for s in sentences), field


def test_long_caption_order_varies(scene_cfg):
    firsts = set()
    for i in range(30):
        rng = sample_rng(0, "train", i)
        firsts.add(dreamlip_captions(sample_scene(rng, scene_cfg), rng)["longIB_captions"][0].split()[0])
    assert len(firsts) > 3


def test_pixel_exact_rasterisation():
    """A circle of radius 10 at the centre of a 64 grid covers exactly the pixel centres within 10 px."""
    mask = rasterize("circle", 32.0, 32.0, 10.0, 0.0, 64)
    yy, xx = np.mgrid[0:64, 0:64] + 0.5
    assert np.array_equal(mask, (xx - 32) ** 2 + (yy - 32) ** 2 <= 100)
    for shape in vocab.SHAPE_NAMES:
        assert rasterize(shape, 32.0, 32.0, 12.0, 0.2, 64).sum() > 100, shape


def test_classification_forces_dominant_shape(scene_cfg):
    for i, shape in enumerate(scene_cfg.shapes):
        assert sample_scene(sample_rng(0, "classify", i), scene_cfg, dominant_shape=shape).dominant.shape == shape


def test_scene_classification_forces_one_background(scene_cfg):
    for i, stuff in enumerate(scene_cfg.stuff):
        scene = sample_scene(sample_rng(0, "scenes", i), scene_cfg, background=stuff)
        assert scene.stuff == [stuff] and scene.boundary is None and not scene.stuff_map.any()
    with pytest.raises(ValueError, match="lava"):
        sample_scene(sample_rng(0, "scenes", 0), scene_cfg, background="lava")


@pytest.mark.parametrize(
    "kwargs, names",
    [
        ({"min_objects": 0}, "min_objects"),
        ({"image_size": 16}, "image_size"),
        ({"max_objects": 9}, "max_objects"),
        ({"shapes": ("circle", "blob")}, "shapes"),
        ({"colours": ("red", "octarine")}, "colours"),
        ({"stuff": ("sky", "lava")}, "stuff"),
        ({"max_stuff": 3}, "max_stuff"),
        ({"min_visible": 0.0}, "min_visible"),
    ],
)
def test_invalid_generator_parameters_name_the_parameter(kwargs, names):
    with pytest.raises(ValueError, match=f"data.generator.{names}"):
        SceneConfig(**kwargs)


@pytest.mark.parametrize("index", range(12))
def test_suppression_probes_are_true_by_construction(scene_cfg, index):
    """Each probe names one object; its negative changes exactly one fact into a false one."""
    from cosmos.data.synthetic.captions import _WHERE
    from cosmos.data.synthetic.probes import SUPPRESSION_TYPES, suppression_negatives

    scene = sample_scene(sample_rng(3, "compose", index), scene_cfg)
    probes = suppression_negatives(scene, scene_cfg, sample_rng(3, "suppress", index))
    if len(scene.things) < 2:
        assert probes == {}
        return
    assert set(probes) <= set(SUPPRESSION_TYPES) and {"dominant_att", "minor_att"} <= set(probes)
    present = {(t.colour, t.shape) for t in scene.things}
    dom = scene.things[0]
    for kind, (pos, neg) in probes.items():
        changed = [(a, b) for a, b in zip(pos.rstrip(".").split(" "), neg.rstrip(".").split(" ")) if a != b]
        assert 1 <= len(changed) <= 3, (pos, neg)  # one word, or one position phrase
        if kind.startswith("dominant"):
            assert f"{dom.colour} {dom.shape}" in pos, (kind, pos)
        if kind.endswith("_obj") or kind.endswith("_att"):
            words = neg.rstrip(".").split(" ")
            assert (words[-2], words[-1]) not in present, (kind, neg)  # the negative object is not in the scene
        if kind == "minor_pos":
            minor = next(t for t in scene.things[1:] if f"{t.colour} {t.shape}" in pos)
            assert pos.endswith(f"{_WHERE[minor.position]}.") and not neg.endswith(f"{_WHERE[minor.position]}.")


def test_suppression_probes_leave_the_sugarcrepe_files_unchanged(tmp_path, scene_cfg):
    """The probes draw from their own stream: the three SugarCrepe files are what they were without them."""
    import json

    from cosmos.data.synthetic.probes import hard_negatives
    from cosmos.data.synthetic.write_benchmarks import probe_scene_config, write_compositional

    counts = write_compositional(tmp_path, 5, scene_cfg, 12)
    assert counts["minor_obj"] == counts["dominant_obj"] > 0
    doc = json.loads((tmp_path / "replace_att.json").read_text())
    for i in range(12):
        rng = sample_rng(5, "compose", i)
        scene = sample_scene(rng, probe_scene_config(scene_cfg))
        pos, neg = hard_negatives(scene, scene_cfg, rng)["replace_att"]
        assert doc[str(i)] == {"filename": f"probe_{i:06d}.jpg", "caption": pos, "negative_caption": neg}
