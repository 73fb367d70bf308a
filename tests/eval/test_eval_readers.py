"""Every reader on a tiny dataset the test writes in that benchmark's exact on-disk layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cosmos.data.formats.sugarcrepe import read_probe
from cosmos.data.formats.voc import encode_label_png
from cosmos.eval.classification import imagenet_metadata, read_classnames, read_image_folder, read_templates
from cosmos.eval.retrieval import read_coco_captions, read_flickr_json, read_karpathy_json
from cosmos.eval.seg_datasets import load_label, read_benchmark

LABEL = np.array([[0, 1, 2], [3, 255, 1]], dtype=np.uint8)


def _img(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(path)


def _lbl(path: Path, palette: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if palette:
        path.write_bytes(encode_label_png(LABEL))
    else:
        Image.fromarray(LABEL, mode="L").save(path)


def _cls(root: Path, name: str, n: int) -> None:
    (root / name).write_text("\n".join(f"class{i}, syn{i}" for i in range(n)) + "\n")


def _split(root: Path, rel: str, ids: list[str]) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text("\n".join(ids) + "\n")


@pytest.mark.parametrize("name, reduce", [("voc21", False), ("voc20", True), ("synthetic_bg", False)])
def test_voc_layout(tmp_path, name, reduce):
    root = tmp_path / "VOCdevkit" / "VOC2012"
    for i in ("2007_000032", "2007_000039"):
        _img(root / "JPEGImages" / f"{i}.jpg")
        _lbl(root / "SegmentationClass" / f"{i}.png")
    _split(root, "ImageSets/Segmentation/val.txt", ["2007_000039", "2007_000032"])
    from cosmos.eval.seg_datasets import BENCHMARKS
    _cls(root, BENCHMARKS[name][2], 4)
    ds = read_benchmark(name, root)
    assert [p[0].stem for p in ds.pairs] == ["2007_000039", "2007_000032"]  # list order
    assert ds.class_names[1] == ["class1", "syn1"] and ds.reduce_zero_label is reduce
    expect = [[255, 0, 1], [2, 255, 0]] if reduce else LABEL.tolist()
    assert load_label(ds.pairs[0][1], ds.reduce_zero_label).tolist() == expect


@pytest.mark.parametrize("name, reduce", [("context60", False), ("context59", True)])
def test_pascal_context_layout(tmp_path, name, reduce):
    root = tmp_path / "VOCdevkit" / "VOC2010"
    _img(root / "JPEGImages" / "2008_000002.jpg")
    _lbl(root / "SegmentationClassContext" / "2008_000002.png", palette=False)
    _split(root, "ImageSets/SegmentationContext/val.txt", ["2008_000002"])
    _cls(root, "cls.txt", 60)
    ds = read_benchmark(name, root, class_file="cls.txt")
    assert len(ds.pairs) == 1 and ds.reduce_zero_label is reduce and len(ds.class_names) == 60
    assert ds.settings.background is (not reduce)


@pytest.mark.parametrize("name, suffix, short", [("coco_object", "_instanceTrainIds.png", 336),
                                                 ("coco_stuff", "_labelTrainIds.png", 448)])
def test_coco_object_and_stuff_layout(tmp_path, name, suffix, short):
    root = tmp_path / "coco_stuff164k"
    for stem in ("000000000285", "000000000139"):
        _img(root / "images" / "val2017" / f"{stem}.jpg")
        _lbl(root / "annotations" / "val2017" / f"{stem}{suffix}", palette=False)
    _cls(root, "cls.txt", 5)
    ds = read_benchmark(name, root, class_file=str(root / "cls.txt"))
    assert [p[0].name for p in ds.pairs] == ["000000000139.jpg", "000000000285.jpg"]
    assert ds.pairs[0][1].name == f"000000000139{suffix}"
    assert not ds.reduce_zero_label and ds.settings.short_side == short
    assert load_label(ds.pairs[0][1]).tolist() == LABEL.tolist()


def test_ade20k_layout(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    _img(root / "images" / "validation" / "ADE_val_00000001.jpg")
    _lbl(root / "annotations" / "validation" / "ADE_val_00000001.png", palette=False)
    _cls(root, "cls_ade20k.txt", 150)
    ds = read_benchmark("ade20k", root)
    assert ds.reduce_zero_label and load_label(ds.pairs[0][1], True).tolist() == [[255, 0, 1], [2, 255, 0]]


def test_cityscapes_layout(tmp_path):
    root = tmp_path / "cityscapes"
    for city, stem in (("frankfurt", "frankfurt_000000_000294"), ("lindau", "lindau_000000_000019")):
        _img(root / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png")
        _lbl(root / "gtFine" / "val" / city / f"{stem}_gtFine_labelTrainIds.png", palette=False)
    _cls(root, "cls_city_scapes.txt", 19)
    ds = read_benchmark("cityscapes", root)
    assert [p[1].name for p in ds.pairs] == ["frankfurt_000000_000294_gtFine_labelTrainIds.png",
                                             "lindau_000000_000019_gtFine_labelTrainIds.png"]
    assert ds.settings.short_side == 560


def test_missing_label_and_class_file_are_named(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    _img(root / "images" / "validation" / "a.jpg")
    _cls(root, "cls_ade20k.txt", 3)
    with pytest.raises(FileNotFoundError, match="missing"):
        read_benchmark("ade20k", root)
    with pytest.raises(FileNotFoundError, match="class-name file"):
        read_benchmark("ade20k", root, class_file="nope.txt")


def test_coco_captions(tmp_path):
    doc = {"images": [{"id": 7, "file_name": "a.jpg"}, {"id": 3, "file_name": "b.jpg"}],
           "annotations": [{"id": 1, "image_id": 3, "caption": " x "}, {"id": 2, "image_id": 7, "caption": "y"},
                           {"id": 3, "image_id": 3, "caption": "z"}]}
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "captions_val2017.json").write_text(json.dumps(doc))
    cs = read_coco_captions(tmp_path)
    assert [p.name for p in cs.image_paths] == ["a.jpg", "b.jpg"]
    assert cs.captions == ["x", "y", "z"] and cs.caption_to_image == [1, 0, 1]


def test_karpathy_json(tmp_path):
    doc = {"dataset": "coco", "images": [
        {"filepath": "val2014", "filename": "t1.jpg", "split": "test", "sentences": [{"raw": "a"}, {"raw": "b"}]},
        {"filepath": "val2014", "filename": "v1.jpg", "split": "val", "sentences": [{"raw": "c"}]},
        {"filepath": "val2014", "filename": "t2.jpg", "split": "test", "sentences": [{"raw": "d"}]},
    ]}
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps(doc))
    cs = read_karpathy_json(path, tmp_path / "coco", "test")
    assert cs.image_paths == [tmp_path / "coco" / "val2014" / "t1.jpg", tmp_path / "coco" / "val2014" / "t2.jpg"]
    assert cs.captions == ["a", "b", "d"] and cs.caption_to_image == [0, 0, 1]
    flickr = {"images": [{"filename": "1.jpg", "split": "test", "sentences": [{"raw": "e"}]}]}
    (tmp_path / "dataset_flickr30k.json").write_text(json.dumps(flickr))
    fs = read_karpathy_json(tmp_path / "dataset_flickr30k.json", tmp_path / "flickr30k-images")
    assert fs.image_paths == [tmp_path / "flickr30k-images" / "1.jpg"]


def test_flickr_flair_json(tmp_path):
    folder = tmp_path / "flickr30k-images"
    folder.mkdir()
    recs = [{"image": "flickr30k-images/1007129816.jpg", "caption": [f"c{i}" for i in range(5)]},
            {"image": "flickr30k-images/1009434119.jpg", "caption": [f"d{i}" for i in range(5)]}]
    (folder / "flickr30k_val.json").write_text(json.dumps(recs))
    cs = read_flickr_json(folder / "flickr30k_val.json")
    assert cs.image_paths[0] == folder / "1007129816.jpg"  # root = the json folder's parent
    assert len(cs.captions) == 10 and cs.caption_to_image == [0] * 5 + [1] * 5


def test_image_folder_classnames_templates(tmp_path):
    for cls, n in (("n02", 2), ("n01", 1)):
        for j in range(n):
            _img(tmp_path / "val" / cls / f"{j}.JPEG")
    (tmp_path / "val" / "n01" / "notes.txt").write_text("x")
    ds = read_image_folder(tmp_path / "val")
    assert ds.folders == ["n01", "n02"] and ds.labels == [0, 1, 1]
    (tmp_path / "classnames.txt").write_text("tench\ngoldfish\n")
    (tmp_path / "templates.json").write_text(json.dumps(["a photo of a {}."]))
    assert read_classnames(tmp_path / "classnames.txt") == ["tench", "goldfish"]
    assert read_templates(tmp_path / "templates.json") == ["a photo of a {}."]
    names, templates = imagenet_metadata()
    assert len(names) == 1000 and len(templates) == 80 and templates[0] == "a bad photo of a {}."


def test_sugarcrepe_json(tmp_path):
    doc = {"1": {"filename": "b.jpg", "caption": "p1", "negative_caption": "n1"},
           "0": {"filename": "a.jpg", "caption": "p0", "negative_caption": "n0"}}
    (tmp_path / "swap_att.json").write_text(json.dumps(doc))
    assert [r["caption"] for r in read_probe(tmp_path / "swap_att.json")] == ["p0", "p1"]
