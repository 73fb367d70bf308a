"""COCO captions format (`annotations/captions_val2017.json`), as COSMOS reads it for retrieval (reference 7.1).

Schema: {"info": {...}, "licenses": [...], "images": [{"id", "file_name", "height", "width"}],
"annotations": [{"id", "image_id", "caption"}]}. Images live in `images/val2017/<file_name>`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cosmos.io.atomic import atomic_write_json

ANNOTATION_FILE = Path("annotations") / "captions_val2017.json"
IMAGE_DIR = Path("images") / "val2017"


def write_coco_captions(
    root: str | Path, images: list[dict], captions: dict[int, list[str]], description: str
) -> Path:
    """Write the annotation json; `images` are COCO image records, `captions` maps image id -> captions."""
    annotations = []
    for image in images:
        for text in captions[image["id"]]:
            annotations.append({"id": len(annotations) + 1, "image_id": image["id"], "caption": text})
    doc = {
        "info": {"description": description, "version": "1.0", "year": 2026},
        "licenses": [],
        "images": images,
        "annotations": annotations,
    }
    path = Path(root) / ANNOTATION_FILE
    atomic_write_json(path, doc)
    return path


@dataclass(frozen=True)
class CaptionSet:
    """Retrieval pairs: image paths, all captions, and for each caption the index of its image."""

    image_paths: list[Path]
    captions: list[str]
    caption_to_image: list[int]


def read_coco_captions(root: str | Path, annotation_file: str | Path = ANNOTATION_FILE,
                       image_dir: str | Path = IMAGE_DIR) -> CaptionSet:
    """Read a COCO captions json; fails with the offending record when the schema is broken."""
    root = Path(root)
    doc = json.loads((root / annotation_file).read_text(encoding="utf-8"))
    for key in ("images", "annotations"):
        if key not in doc:
            raise ValueError(f"{root / annotation_file}: missing top-level key {key!r} (not COCO captions format)")
    index = {}
    paths = []
    for image in doc["images"]:
        if "id" not in image or "file_name" not in image:
            raise ValueError(f"{root / annotation_file}: image record without id/file_name: {image}")
        index[image["id"]] = len(paths)
        paths.append(root / image_dir / image["file_name"])
    captions, owners = [], []
    for ann in doc["annotations"]:
        if ann.get("image_id") not in index or not isinstance(ann.get("caption"), str):
            raise ValueError(f"{root / annotation_file}: bad annotation record {ann}")
        captions.append(ann["caption"].strip())
        owners.append(index[ann["image_id"]])
    return CaptionSet(paths, captions, owners)
