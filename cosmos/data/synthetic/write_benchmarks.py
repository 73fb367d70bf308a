"""The synthetic evaluation sets, each in the exact on-disk layout of its real counterpart.

| folder            | real counterpart        | layout                                                      |
|-------------------|-------------------------|-------------------------------------------------------------|
| `coco/`           | COCO val2017 retrieval  | `annotations/captions_val2017.json`, `images/val2017/*.jpg` |
| `classification/objects/` | ImageNet val    | ImageFolder `val/<class>/*.jpg`, `classnames.txt`, `templates.json` |
| `classification/scenes/`  | SUN397          | the same ImageFolder layout; class = the background              |
| `voc_bg/`         | VOC21 (with background) | VOC layout + `cls_synthetic_bg.txt`                         |
| `voc_stuff/`      | COCO-Stuff (no background) | VOC layout + `cls_synthetic_stuff.txt`                   |
| `sugarcrepe/`     | SugarCrepe              | `images/*.jpg`, `{replace_att,replace_obj,swap_att}.json`   |
|                   | (+ suppression probes)  | `{dominant,minor}_{obj,att}.json`, `minor_pos.json`         |

Every split draws from its own seed stream, disjoint from the training scenes.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from cosmos.data.formats import coco, sugarcrepe, voc
from cosmos.data.images import encode_jpeg
from cosmos.data.synthetic import vocab
from cosmos.data.synthetic.captions import STUFF_PHRASE, retrieval_captions
from cosmos.data.synthetic.probes import SUPPRESSION_TYPES, hard_negatives, suppression_negatives
from cosmos.data.synthetic.scene import Scene, SceneConfig, sample_rng, sample_scene
from cosmos.io.atomic import atomic_write_bytes, atomic_write_text

CLASSIFICATION_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a rendering of a {}.",
    "a drawing of a {}.",
    "a picture of a {}.",
    "a {} shape.",
    "a colorful {}.",
    "a photo of a large {}.",
    "a {} in front of a background.",
)

SCENE_TEMPLATES: tuple[str, ...] = (
    "a photo of {}.",
    "a picture of {}.",
    "a scene with {}.",
    "shapes on {}.",
    "objects in front of {}.",
    "{} in the background.",
)

_STUFF_SYNONYMS = {"wall": ["wall", "brick wall"], "water": ["water", "sea"]}


def write_retrieval(root: Path, seed: int, cfg: SceneConfig, n: int) -> dict:
    images, captions = [], {}
    for i in range(n):
        rng = sample_rng(seed, "retrieval", i)
        scene = sample_scene(rng, cfg)
        image_id = i + 1
        name = f"{image_id:012d}.jpg"
        atomic_write_bytes(root / coco.IMAGE_DIR / name, encode_jpeg(scene.image))
        images.append({"id": image_id, "file_name": name, "height": cfg.image_size, "width": cfg.image_size})
        captions[image_id] = retrieval_captions(scene, rng)
    coco.write_coco_captions(root, images, captions, "cosmos synthetic retrieval set")
    return {"images": n, "captions": 5 * n}


def _write_image_folder(root: Path, folders: list[str], names: list[str], templates: tuple[str, ...],
                        per_class: int, draw) -> dict:
    """ImageFolder `val/<folder>/*.jpg` + `classnames.txt` + `templates.json`; `draw(class_index, j)` -> Scene.
    `folders` are sorted, so ImageFolder's indices follow them; `names[i]` is the prompt name of `folders[i]`
    (as ImageNet's `n01440764` folder is the class "tench")."""
    for c, folder in enumerate(folders):
        for j in range(per_class):
            atomic_write_bytes(root / "val" / folder / f"{folder}_{j:05d}.jpg", encode_jpeg(draw(c, j).image))
    atomic_write_text(root / "classnames.txt", "\n".join(names) + "\n")
    atomic_write_text(root / "templates.json", json.dumps(list(templates), indent=2) + "\n")
    return {"classes": len(folders), "images": len(folders) * per_class}


def write_classification(root: Path, seed: int, cfg: SceneConfig, per_class: int) -> dict:
    """Two zero-shot classification sets, `per_class` images per class each.

    - `objects/` (the ImageNet analogue): class = the dominant object's shape, over any background.
    - `scenes/` (the SUN397 analogue): class = the background, one stuff class filling the whole scene
      behind 1-4 objects, named by the phrase the captions use for it ("a brick wall").
    """
    shapes, stuff = sorted(cfg.shapes), sorted(cfg.stuff)

    def draw_object(c: int, j: int) -> Scene:
        return sample_scene(sample_rng(seed, "classify", c * per_class + j), cfg, dominant_shape=shapes[c])

    def draw_scene(c: int, j: int) -> Scene:
        return sample_scene(sample_rng(seed, "scenes", c * per_class + j), cfg, background=stuff[c])

    return {
        "objects": _write_image_folder(root / "objects", shapes, shapes, CLASSIFICATION_TEMPLATES, per_class,
                                       draw_object),
        "scenes": _write_image_folder(root / "scenes", stuff, [STUFF_PHRASE[s] for s in stuff], SCENE_TEMPLATES,
                                      per_class, draw_scene),
    }


def segmentation_labels(scene: Scene, cfg: SceneConfig, with_background: bool) -> np.ndarray:
    """(S, S) uint8 class map. With background: 0 = any stuff, 1.. = shapes in `cfg.shapes` order.
    Without: 0..len(stuff)-1 = stuff classes in `cfg.stuff` order, then the shapes."""
    shape_ids = np.array([cfg.shapes.index(t.shape) for t in scene.things], dtype=np.int64)
    if with_background:
        labels = np.zeros(scene.thing_map.shape, dtype=np.int64)
        offset = 1
    else:
        stuff_ids = np.array([cfg.stuff.index(s) for s in scene.stuff], dtype=np.int64)
        labels = stuff_ids[scene.stuff_map.astype(np.int64)]
        offset = len(cfg.stuff)
    things = scene.thing_map >= 0
    labels[things] = offset + shape_ids[scene.thing_map[things].astype(np.int64)]
    return labels.astype(np.uint8)


def seg_class_names(cfg: SceneConfig, with_background: bool) -> list[list[str]]:
    shapes = [list(vocab.SHAPES[s]) for s in cfg.shapes]
    if with_background:
        # Like SCLIP's VOC21 file, the background line lists stuff words as its synonyms.
        return [list(cfg.stuff)] + shapes
    return [_STUFF_SYNONYMS.get(s, [s]) for s in cfg.stuff] + shapes


def write_segmentation(bg_root: Path, stuff_root: Path, seed: int, cfg: SceneConfig, n: int) -> dict:
    """Both label spaces over the same scenes (as VOC21/VOC20 share images)."""
    ids = []
    for i in range(n):
        scene = sample_scene(sample_rng(seed, "segment", i), cfg)
        sid = f"seg_{i:06d}"
        jpeg = encode_jpeg(scene.image)
        voc.write_voc_sample(bg_root, sid, jpeg, segmentation_labels(scene, cfg, True))
        voc.write_voc_sample(stuff_root, sid, jpeg, segmentation_labels(scene, cfg, False))
        ids.append(sid)
    voc.write_voc_index(bg_root, "val", ids, seg_class_names(cfg, True), "cls_synthetic_bg.txt")
    voc.write_voc_index(stuff_root, "val", ids, seg_class_names(cfg, False), "cls_synthetic_stuff.txt")
    return {"images": n, "classes_bg": 1 + len(cfg.shapes), "classes_stuff": len(cfg.stuff) + len(cfg.shapes)}


def probe_scene_config(cfg: SceneConfig) -> SceneConfig:
    """The compositional scenes have at least two objects (when the generator allows two): every scene
    then carries every probe, the suppression probes need a non-dominant object, and `swap_att` two
    objects; like SugarCrepe's COCO images, the scenes are multi-object."""
    return replace(cfg, min_objects=max(cfg.min_objects, min(2, cfg.max_objects)))


def write_compositional(root: Path, seed: int, cfg: SceneConfig, n: int) -> dict:
    """SugarCrepe files over `n` scenes of :func:`probe_scene_config`: the three SugarCrepe types and the
    feature-suppression probes (probes.py), the latter from their own random stream."""
    records: dict[str, list[dict[str, str]]] = {t: [] for t in (*sugarcrepe.PROBE_TYPES, *SUPPRESSION_TYPES)}
    scene_cfg = probe_scene_config(cfg)
    for i in range(n):
        rng = sample_rng(seed, "compose", i)
        scene = sample_scene(rng, scene_cfg)
        name = f"probe_{i:06d}.jpg"
        atomic_write_bytes(root / "images" / name, encode_jpeg(scene.image))
        negatives = {**hard_negatives(scene, cfg, rng),
                     **suppression_negatives(scene, cfg, sample_rng(seed, "suppress", i))}
        for kind, (pos, neg) in negatives.items():
            records[kind].append({"filename": name, "caption": pos, "negative_caption": neg})
    for kind, recs in records.items():
        sugarcrepe.write_probe(root, kind, recs)
    return {"images": n, **{kind: len(recs) for kind, recs in records.items()}}
