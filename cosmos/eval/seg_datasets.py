"""Semantic-segmentation benchmarks as SCLIP / COSMOS evaluate them (reference spec 7.3), without mmseg.

Each reader takes the benchmark's standard directory layout (the one mmseg's dataset class and SCLIP's
converters produce) and returns (image, label) path pairs in sorted order:

| benchmark | root | images | labels | reduce_zero_label |
|---|---|---|---|---|
| voc21 / voc20 | ``VOCdevkit/VOC2012`` | ``JPEGImages/<id>.jpg`` | ``SegmentationClass/<id>.png`` (ids from ``ImageSets/Segmentation/val.txt``) | False / True |
| context60 / context59 | ``VOCdevkit/VOC2010`` | ``JPEGImages/<id>.jpg`` | ``SegmentationClassContext/<id>.png`` (``ImageSets/SegmentationContext/val.txt``) | False / True |
| coco_object | ``coco_stuff164k`` | ``images/val2017/*.jpg`` | ``annotations/val2017/*_instanceTrainIds.png`` (SCLIP ``convert_coco_object.py``) | False |
| coco_stuff | ``coco_stuff164k`` | ``images/val2017/*.jpg`` | ``annotations/val2017/*_labelTrainIds.png`` (171 classes) | False |
| ade20k | ``ADEChallengeData2016`` | ``images/validation/*.jpg`` | ``annotations/validation/*.png`` | True |
| cityscapes | ``cityscapes`` | ``leftImg8bit/val/<city>/*_leftImg8bit.png`` | ``gtFine/val/<city>/*_gtFine_labelTrainIds.png`` | False |
| synthetic_bg / synthetic_stuff | ``raw/voc_bg`` / ``raw/voc_stuff`` | VOC layout | VOC layout | False |

``reduce_zero_label`` (mmseg ``LoadAnnotations``): label 0 becomes 255 (ignored) and every other label
drops by one, so VOC20 drops the background, ADE20K its "other" class and Context59 its background.
Label 255 is ignored everywhere.

Class names come from SCLIP-style ``cls_*.txt`` files (one line per class, comma-separated synonyms); the
real benchmarks' files are not shipped here, so their configs must name one (``class_file``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cosmos.data.formats.voc import IGNORE_INDEX, read_class_names

__all__ = ["SegDataset", "SegSettings", "BENCHMARKS", "read_benchmark", "load_label", "reduce_zero_label",
           "pair_by_suffix", "IGNORE_INDEX"]


@dataclass(frozen=True)
class SegSettings:
    """SCLIP test settings of one benchmark (spec 7.3 table; defaults 40 / 0.0 / None)."""

    short_side: int = 336
    crop: int = 224
    stride: int = 112
    logit_scale: float = 40.0
    prob_thd: float = 0.0
    area_thd: float | None = None
    background: bool = False       # class 0 is a background class (prob_thd assigns to it)


@dataclass(frozen=True)
class SegDataset:
    name: str
    pairs: list[tuple[Path, Path]]
    class_names: list[list[str]]
    reduce_zero_label: bool = False
    settings: SegSettings = field(default_factory=SegSettings)


def reduce_zero_label(label: np.ndarray) -> np.ndarray:
    """mmseg semantics: 0 -> 255 (ignore), k -> k-1, 255 stays 255."""
    label = label.astype(np.int64)
    out = label - 1
    out[(label == 0) | (label == IGNORE_INDEX)] = IGNORE_INDEX
    return out


def load_label(path: str | Path, reduce: bool = False) -> np.ndarray:
    """``[H, W]`` int64 class map from a palette or grey PNG (palette indices, not colours)."""
    with Image.open(path) as img:
        if img.mode not in ("P", "L", "I", "I;16"):
            raise ValueError(f"{path}: label PNG must be palette or greyscale, got mode {img.mode}")
        label = np.array(img).astype(np.int64)
    return reduce_zero_label(label) if reduce else label


def pair_by_suffix(img_dir: Path, img_suffix: str, ann_dir: Path, seg_suffix: str) -> list[tuple[Path, Path]]:
    """mmseg ``BaseSegDataset`` pairing: every ``*img_suffix`` under ``img_dir`` (recursive, sorted) with the
    same relative path under ``ann_dir``, suffix swapped. A missing label is an error."""
    if not img_dir.is_dir():
        raise FileNotFoundError(f"image folder {img_dir} does not exist")
    pairs = []
    for img in sorted(img_dir.rglob(f"*{img_suffix}")):
        rel = img.relative_to(img_dir).as_posix()
        pairs.append((img, ann_dir / (rel[: -len(img_suffix)] + seg_suffix)))
    _check(pairs, img_dir)
    return pairs


def _check(pairs: list[tuple[Path, Path]], where: Path) -> None:
    if not pairs:
        raise ValueError(f"{where}: no images found")
    missing = [str(p) for pair in pairs for p in pair if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{where}: {len(missing)} listed files are missing, e.g. {missing[:3]}")


def _split_list(root: Path, list_file: str, img_dir: str, ann_dir: str) -> list[tuple[Path, Path]]:
    ids = (root / list_file).read_text().split()
    pairs = [(root / img_dir / f"{i}.jpg", root / ann_dir / f"{i}.png") for i in ids]
    _check(pairs, root)
    return pairs


def _voc(root: Path, split: str) -> list[tuple[Path, Path]]:
    return _split_list(root, f"ImageSets/Segmentation/{split}.txt", "JPEGImages", "SegmentationClass")


def _context(root: Path, split: str) -> list[tuple[Path, Path]]:
    return _split_list(root, f"ImageSets/SegmentationContext/{split}.txt", "JPEGImages", "SegmentationClassContext")


def _coco(seg_suffix: str):
    def read(root: Path, split: str) -> list[tuple[Path, Path]]:
        split = "val2017" if split == "val" else split
        return pair_by_suffix(root / "images" / split, ".jpg", root / "annotations" / split, seg_suffix)
    return read


def _ade20k(root: Path, split: str) -> list[tuple[Path, Path]]:
    split = "validation" if split == "val" else split
    return pair_by_suffix(root / "images" / split, ".jpg", root / "annotations" / split, ".png")


def _cityscapes(root: Path, split: str) -> list[tuple[Path, Path]]:
    return pair_by_suffix(root / "leftImg8bit" / split, "_leftImg8bit.png", root / "gtFine" / split,
                          "_gtFine_labelTrainIds.png")


# name -> (layout reader, reduce_zero_label, default class file, SCLIP settings)
BENCHMARKS: dict[str, tuple] = {
    "voc21": (_voc, False, "cls_voc21.txt", SegSettings(336, logit_scale=65, prob_thd=0.1, area_thd=0.1, background=True)),
    "voc20": (_voc, True, "cls_voc20.txt", SegSettings(336)),
    "context60": (_context, False, "cls_context60.txt", SegSettings(336, logit_scale=50, prob_thd=0.1, background=True)),
    "context59": (_context, True, "cls_context59.txt", SegSettings(336)),
    "coco_object": (_coco("_instanceTrainIds.png"), False, "cls_coco_object.txt",
                    SegSettings(336, logit_scale=50, prob_thd=0.1, background=True)),
    "coco_stuff": (_coco("_labelTrainIds.png"), False, "cls_coco_stuff.txt", SegSettings(448)),
    "ade20k": (_ade20k, True, "cls_ade20k.txt", SegSettings(336)),
    "cityscapes": (_cityscapes, False, "cls_city_scapes.txt", SegSettings(560)),
    # Synthetic stand-ins (64-px scenes, 32-px model): VOC21-like with background, COCO-Stuff-like without.
    "synthetic_bg": (_voc, False, "cls_synthetic_bg.txt",
                     SegSettings(64, 32, 16, logit_scale=65, prob_thd=0.1, area_thd=0.1, background=True)),
    "synthetic_stuff": (_voc, False, "cls_synthetic_stuff.txt", SegSettings(64, 32, 16)),
}


def read_benchmark(name: str, root: str | Path, *, split: str = "val", class_file: str | Path | None = None,
                   **overrides) -> SegDataset:
    """A :class:`SegDataset` for benchmark ``name`` at ``root``.

    ``class_file`` is resolved against ``root`` when relative (default: the SCLIP file name in ``root``).
    ``overrides`` replace :class:`SegSettings` fields (e.g. ``crop=32, stride=16`` for a small model).
    """
    if name not in BENCHMARKS:
        raise ValueError(f"unknown segmentation benchmark {name!r}; known: {sorted(BENCHMARKS)}")
    reader, reduce, default_cls, settings = BENCHMARKS[name]
    root = Path(root)
    cls_path = Path(class_file or default_cls)
    cls_path = cls_path if cls_path.is_absolute() else root / cls_path
    if not cls_path.is_file():
        raise FileNotFoundError(f"{name}: class-name file {cls_path} not found (SCLIP cls_*.txt format)")
    unknown = sorted(set(overrides) - set(SegSettings.__dataclass_fields__))
    if unknown:
        raise ValueError(f"{name}: unknown segmentation setting(s) {unknown}")
    settings = SegSettings(**{**settings.__dict__, **overrides})
    return SegDataset(name, reader(root, split), read_class_names(cls_path), reduce, settings)
