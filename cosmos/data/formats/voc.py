"""Pascal VOC segmentation layout: `JPEGImages/<id>.jpg`, `SegmentationClass/<id>.png` (palette PNG, one
class index per pixel, 255 = ignore), `ImageSets/Segmentation/<split>.txt`, plus an SCLIP-style class-name
file (one line per class, comma-separated synonyms).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from cosmos.io.atomic import atomic_write_bytes, atomic_write_text

IGNORE_INDEX = 255


def voc_palette() -> list[int]:
    """The standard VOC colour map (bit-interleaved), 256 RGB triples flattened."""
    palette = []
    for label in range(256):
        r = g = b = 0
        c = label
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette += [r, g, b]
    return palette


def encode_label_png(labels: np.ndarray) -> bytes:
    """A (H, W) uint8 label map as palette ('P' mode) PNG bytes."""
    if labels.dtype != np.uint8:
        raise ValueError(f"label maps must be uint8, got {labels.dtype}")
    img = Image.fromarray(labels, mode="P")
    img.putpalette(voc_palette())
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def write_voc_sample(root: Path, sample_id: str, jpeg: bytes, labels: np.ndarray) -> None:
    atomic_write_bytes(root / "JPEGImages" / f"{sample_id}.jpg", jpeg)
    atomic_write_bytes(root / "SegmentationClass" / f"{sample_id}.png", encode_label_png(labels))


def write_voc_index(root: Path, split: str, ids: list[str], class_names: list[list[str]], cls_file: str) -> None:
    """Write the split list and the class-name file (line i = class i, synonyms comma-separated)."""
    atomic_write_text(root / "ImageSets" / "Segmentation" / f"{split}.txt", "\n".join(ids) + "\n")
    atomic_write_text(root / cls_file, "\n".join(", ".join(names) for names in class_names) + "\n")


def read_class_names(path: str | Path) -> list[list[str]]:
    """SCLIP `cls_*.txt`: one class per line, synonyms separated by commas."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [[name.strip() for name in line.split(",") if name.strip()] for line in lines if line.strip()]


def read_voc_split(root: str | Path, split: str = "val") -> list[tuple[Path, Path]]:
    """(image, label) path pairs of a VOC-layout split, in list order; missing files are an error."""
    root = Path(root)
    ids = (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
    pairs = [(root / "JPEGImages" / f"{i}.jpg", root / "SegmentationClass" / f"{i}.png") for i in ids]
    missing = [str(p) for pair in pairs for p in pair if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{root}: {len(missing)} files listed in {split}.txt are missing, e.g. {missing[:3]}")
    return pairs
