"""Every written format is read back by its standard reader (webdataset, COCO json, PIL, ImageFolder)."""

from __future__ import annotations

import json
import tarfile

import pytest

import numpy as np
import webdataset as wds
from PIL import Image
from torchvision.datasets import ImageFolder

from cosmos.data.formats import coco, sugarcrepe, voc
from cosmos.data.synthetic.captions import STUFF_PHRASE
from cosmos.data.synthetic.write_pretrain import caption_string
from tests.conftest import TINY_SIZES


def test_coco_captions_schema(tiny_raw):
    doc = json.loads((tiny_raw / "coco" / coco.ANNOTATION_FILE).read_text())
    assert set(doc) >= {"info", "licenses", "images", "annotations"}
    ids = {im["id"] for im in doc["images"]}
    assert len(ids) == TINY_SIZES.retrieval
    for im in doc["images"]:
        assert set(im) >= {"id", "file_name", "height", "width"} and isinstance(im["id"], int)
        assert (tiny_raw / "coco" / coco.IMAGE_DIR / im["file_name"]).exists()
    per_image = {i: 0 for i in ids}
    for ann in doc["annotations"]:
        assert set(ann) >= {"id", "image_id", "caption"} and ann["image_id"] in ids
        per_image[ann["image_id"]] += 1
    assert set(per_image.values()) == {5}
    pairs = coco.read_coco_captions(tiny_raw / "coco")
    assert len(pairs.captions) == 5 * TINY_SIZES.retrieval and max(pairs.caption_to_image) == TINY_SIZES.retrieval - 1


@pytest.mark.parametrize("kind", ["objects", "scenes"])
def test_imagefolder_classes_match_classnames(tiny_raw, scene_cfg, kind):
    root = tiny_raw / "classification" / kind
    ds = ImageFolder(str(root / "val"))
    names = (root / "classnames.txt").read_text().split("\n")[:-1]
    assert ds.classes == sorted(scene_cfg.shapes if kind == "objects" else scene_cfg.stuff)
    assert names == (ds.classes if kind == "objects" else [STUFF_PHRASE[s] for s in ds.classes])
    assert len(ds) == len(names) * TINY_SIZES.classification_per_class
    image, label = ds[0]
    assert image.size == (scene_cfg.image_size, scene_cfg.image_size) and label == 0
    templates = json.loads((root / "templates.json").read_text())
    assert all("{}" in t for t in templates)


def test_voc_layouts_read_back_with_pil(tiny_raw, scene_cfg):
    for folder, cls_file, n_classes in (
        ("voc_bg", "cls_synthetic_bg.txt", 1 + len(scene_cfg.shapes)),
        ("voc_stuff", "cls_synthetic_stuff.txt", len(scene_cfg.stuff) + len(scene_cfg.shapes)),
    ):
        root = tiny_raw / folder
        pairs = voc.read_voc_split(root, "val")
        assert len(pairs) == TINY_SIZES.segmentation
        assert len(voc.read_class_names(root / cls_file)) == n_classes
        for image_path, label_path in pairs:
            label = Image.open(label_path)
            assert label.mode == "P" and label.getpalette()[:6] == [0, 0, 0, 128, 0, 0]
            values = np.unique(np.asarray(label))
            assert values.max() < n_classes
            assert Image.open(image_path).size == label.size


def test_background_class_file_lists_stuff_synonyms(tiny_raw, scene_cfg):
    names = voc.read_class_names(tiny_raw / "voc_bg" / "cls_synthetic_bg.txt")
    assert names[0] == list(scene_cfg.stuff)
    assert names[1 + scene_cfg.shapes.index("cross")] == ["cross", "plus sign"]


def test_sugarcrepe_probe(tiny_raw):
    for kind in sugarcrepe.PROBE_TYPES:
        records = sugarcrepe.read_probe(tiny_raw / "sugarcrepe" / f"{kind}.json")
        assert records, kind
        for r in records:
            assert r["caption"] != r["negative_caption"]
            assert (tiny_raw / "sugarcrepe" / "images" / r["filename"]).exists()
    swaps = sugarcrepe.read_probe(tiny_raw / "sugarcrepe" / "swap_att.json")
    for r in swaps:  # a swap keeps the same words, in another order
        assert sorted(r["caption"].lower().split()) == sorted(r["negative_caption"].lower().split())


def test_pretrain_raw_is_img2dataset_layout(tiny_raw):
    tars = sorted((tiny_raw / "pretrain" / "images").glob("*.tar"))
    assert len(tars) == -(-TINY_SIZES.train // TINY_SIZES.samples_per_tar)
    sample = next(iter(wds.WebDataset(str(tars[0]), shardshuffle=False)))
    meta = json.loads(sample["json"])
    assert set(meta) >= {"key", "url", "status"} and meta["url"].endswith(f"{sample['__key__']}.jpg")
    header = (tiny_raw / "pretrain" / "annotations.csv").read_text().splitlines()[0]
    assert header.startswith("Image Path,raw_caption,shortIB_captions,longIB_captions")
    assert caption_string(["A b", "C d"]) == "A b. C d."
    with tarfile.open(tars[-1]) as tf:
        held = len({m.name.split(".")[0] for m in tf})
    stats = json.loads((tars[-1].parent / f"{tars[-1].stem}_stats.json").read_text())
    assert stats["successes"] == stats["count"] == held == TINY_SIZES.train - TINY_SIZES.samples_per_tar * (len(tars) - 1)


def test_training_shards_read_back_with_webdataset(tiny_shards):
    manifest = json.loads((tiny_shards / "manifest.json").read_text())
    urls = [str(tiny_shards / s["file"]) for s in manifest["shards"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("pil"))
    assert len(samples) == manifest["num_samples"] == TINY_SIZES.train
    assert sum(s["samples"] for s in manifest["shards"]) == len(samples)
    for s in samples[:5]:
        assert isinstance(s["jpg"], Image.Image)
        for field in ("raw_caption", "longIB_captions", "shortLLA_captions"):
            assert isinstance(s["json"][field], list) and all(isinstance(x, str) for x in s["json"][field])
