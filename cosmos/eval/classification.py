"""Zero-shot classification (reference spec 7.2; ``zero_shot_classifier.py:21-72``, ``zero_shot.py:44-85``).

Classifier W ``[E, C]``: for each class, the L2-normalized text embeddings of every template filled with the
class name, averaged and renormalized. Logits = 100 · img @ W; top-1 / top-5 accuracy in percent.
ImageNet uses open_clip's ``IMAGENET_CLASSNAMES`` and the 80 ``OPENAI_IMAGENET_TEMPLATES``, imported from
open_clip rather than copied (:func:`imagenet_metadata`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cosmos.eval.embed import embed_images, embed_texts
from cosmos.eval.sources import EvalModel
from cosmos.report.intervals import ItemScores

__all__ = ["ImageFolderSet", "read_image_folder", "read_classnames", "read_templates", "imagenet_metadata",
           "zero_shot_classifier", "topk_correct", "evaluate_classification"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class ImageFolderSet:
    """torchvision ``ImageFolder`` semantics: class index = position of the folder in sorted order."""

    paths: list[Path]
    labels: list[int]
    folders: list[str]


def read_image_folder(root: str | Path) -> ImageFolderSet:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"ImageFolder root {root} does not exist")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    paths, labels = [], []
    for idx, name in enumerate(folders):
        for p in sorted((root / name).rglob("*")):
            if p.suffix.lower() in IMAGE_EXTENSIONS:
                paths.append(p)
                labels.append(idx)
    if not paths:
        raise ValueError(f"{root}: no images in class folders")
    return ImageFolderSet(paths, labels, folders)


def read_classnames(path: str | Path) -> list[str]:
    """One class name per line, in class-index order."""
    return [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]


def read_templates(path: str | Path) -> list[str]:
    """A json list of templates, each with one ``{}`` for the class name."""
    templates = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(templates, list) or not all(isinstance(t, str) and "{}" in t for t in templates):
        raise ValueError(f"{path}: expected a json list of strings containing '{{}}'")
    return templates


def imagenet_metadata() -> tuple[list[str], list[str]]:
    """(1000 ImageNet class names, 80 OpenAI templates as format strings) from open_clip."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES

    # open_clip stores templates as lambdas; "{}" recovers the format string exactly.
    return list(IMAGENET_CLASSNAMES), [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]


def zero_shot_classifier(em: EvalModel, classnames: list[str], templates: list[str],
                         batch_size: int = 256) -> torch.Tensor:
    """``W [E, C]``: per class, mean of normalized template embeddings, renormalized."""
    texts = [t.format(c) for c in classnames for t in templates]
    emb = embed_texts(em, texts, batch_size, desc="class prompts")  # [C*T, E], normalized
    w = emb.view(len(classnames), len(templates), -1).mean(1)
    return torch.nn.functional.normalize(w, dim=-1).T


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """``[N]`` bool: the label is among the ``k`` highest logits."""
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == labels.unsqueeze(1)).any(1)


def evaluate_classification(em: EvalModel, data: ImageFolderSet, classnames: list[str], templates: list[str],
                            batch_size: int = 64, items: dict[str, ItemScores] | None = None,
                            text_batch_size: int = 256) -> tuple[dict[str, float], list[dict]]:
    """Top-1/top-5 (percent) and per-class rows ``{class, images, top1, top5}``; ``items``, when given,
    receives the per-image hits of ``top1`` and ``top5`` (for bootstrap intervals). Images are embedded
    ``batch_size`` and class prompts ``text_batch_size`` per forward."""
    if len(classnames) != len(data.folders):
        raise ValueError(f"{len(classnames)} class names for {len(data.folders)} class folders")
    w = zero_shot_classifier(em, classnames, templates, text_batch_size)
    img = embed_images(em, data.paths, batch_size, desc="classification images")
    logits = 100.0 * img @ w
    labels = torch.tensor(data.labels)
    top1, top5 = topk_correct(logits, labels, 1), topk_correct(logits, labels, 5)
    rows = []
    for c, name in enumerate(classnames):
        m = labels == c
        n = int(m.sum())
        rows.append({"class": name, "images": n,
                     "top1": 100.0 * top1[m].float().mean().item() if n else float("nan"),
                     "top5": 100.0 * top5[m].float().mean().item() if n else float("nan")})
    metrics = {"top1": 100.0 * top1.float().mean().item(), "top5": 100.0 * top5.float().mean().item(),
               "images": len(data.paths), "classes": len(classnames)}
    if items is not None:
        ones = np.ones(len(data.paths))
        items.update(top1=ItemScores(top1.double().numpy(), ones), top5=ItemScores(top5.double().numpy(), ones))
    return metrics, rows
