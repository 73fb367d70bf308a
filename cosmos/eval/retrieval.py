"""Zero-shot image-text retrieval (reference spec 7.1, ``train.py:698-749``).

Readers (all return :class:`~cosmos.data.formats.coco.CaptionSet`):

- COCO captions json (``annotations/captions_val2017.json`` + ``images/val2017``): what COSMOS evaluates,
  val2017 with 5,000 images and 25,014 captions. Reader: :func:`cosmos.data.formats.coco.read_coco_captions`.
- Karpathy json (``dataset_coco.json`` / ``dataset_flickr30k.json``): ``{"images": [{"filepath"?,
  "filename", "split", "sentences": [{"raw": str}, ...]}]}``; one ``split`` is kept (``test`` gives the
  usual 5K COCO / 1K Flickr test sets). Image path = ``image_root / filepath / filename``.
- Flickr30k val json as FLAIR ships it (``flickr30k-images/flickr30k_val.json``), which COSMOS reads:
  ASSUMED FORMAT (the BLIP/FLAIR style; not verified against the file): a list of ``{"image": str,
  "caption": [str, ...]}`` with ``image`` relative to an image root. The root defaults to the json's folder,
  or its parent when ``image`` already starts with that folder's name (``flickr30k-images/123.jpg``).

Metrics, on S = I·Tᵀ of L2-normalized embeddings (``logit_scale`` does not change ranks):

- I2T rank of image i = the best (smallest) 0-based rank of any of its ground-truth captions;
- T2I rank of caption t = the 0-based rank of its single ground-truth image;
- R@K = 100 · fraction with rank < K (K = 1, 5, 10), mean rank and median rank reported 1-based
  (open_clip's ``preds.mean() + 1`` and ``floor(median) + 1``).
- Ties: the rank counts items scoring strictly higher than the ground truth (an optimistic, deterministic
  tie rule; the reference's ``argsort`` order among exact ties is unspecified).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from cosmos.data.formats.coco import CaptionSet, read_coco_captions
from cosmos.eval.embed import embed_images, embed_texts
from cosmos.eval.ranks import caption_ranks
from cosmos.eval.sources import EvalModel
from cosmos.report.intervals import ItemScores

__all__ = ["read_coco_captions", "read_karpathy_json", "read_flickr_json", "recall_metrics",
           "caption_ranks", "recall_items", "evaluate_retrieval", "RECALL_KS"]

RECALL_KS = (1, 5, 10)


def read_karpathy_json(path: str | Path, image_root: str | Path, split: str = "test") -> CaptionSet:
    """The ``split`` images of a Karpathy-format json and all their sentences, in file order."""
    path = Path(path)
    doc = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or "images" not in doc:
        raise ValueError(f"{path}: expected a Karpathy json with top-level 'images'")
    paths, captions, owners = [], [], []
    for rec in doc["images"]:
        if rec.get("split") != split:
            continue
        if "filename" not in rec or not rec.get("sentences"):
            raise ValueError(f"{path}: record without filename/sentences: {str(rec)[:200]}")
        paths.append(Path(image_root) / rec.get("filepath", "") / rec["filename"])
        for sent in rec["sentences"]:
            captions.append(sent["raw"].strip())
            owners.append(len(paths) - 1)
    if not paths:
        raise ValueError(f"{path}: no images with split={split!r}")
    return CaptionSet(paths, captions, owners)


def read_flickr_json(path: str | Path, image_root: str | Path | None = None) -> CaptionSet:
    """FLAIR/BLIP-style Flickr30k json (see the module docstring for the assumed format)."""
    path = Path(path)
    records = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(records, list) or not records:
        raise ValueError(f"{path}: expected a non-empty list of {{'image', 'caption'}} records")
    if image_root is None:
        first = Path(records[0]["image"])
        image_root = path.parent.parent if first.parts[0] == path.parent.name else path.parent
    paths, captions, owners = [], [], []
    for rec in records:
        caps = rec.get("caption")
        caps = [caps] if isinstance(caps, str) else caps
        if "image" not in rec or not caps:
            raise ValueError(f"{path}: bad record {str(rec)[:200]}")
        paths.append(Path(image_root) / rec["image"])
        captions.extend(c.strip() for c in caps)
        owners.extend([len(paths) - 1] * len(caps))
    return CaptionSet(paths, captions, owners)


def recall_metrics(sim: torch.Tensor, caption_to_image, ks=RECALL_KS) -> dict[str, float]:
    """``image_to_text_R@K``, ``text_to_image_R@K`` (percent), and ``*_mean_rank`` / ``*_median_rank``."""
    i2t, t2i = caption_ranks(sim.float(), torch.as_tensor(caption_to_image))
    out: dict[str, float] = {}
    for name, ranks in (("image_to_text", i2t), ("text_to_image", t2i)):
        for k in ks:
            out[f"{name}_R@{k}"] = 100.0 * (ranks < k).float().mean().item()
        out[f"{name}_mean_rank"] = ranks.float().mean().item() + 1
        out[f"{name}_median_rank"] = float(torch.floor(ranks.float().median()).item() + 1)
    return out


def recall_items(sim: torch.Tensor, caption_to_image, ks=RECALL_KS) -> dict[str, ItemScores]:
    """Per-image parts of every R@K, for bootstrap intervals over images (``cosmos.report.intervals``).

    I2T: image i scores 1 when its rank < K. T2I: image i contributes its captions, ``num`` = how many of
    them rank their image < K, ``den`` = how many it has (resampling images keeps captions with their image).
    """
    i2t, t2i = caption_ranks(sim.float(), torch.as_tensor(caption_to_image))
    owner = torch.as_tensor(caption_to_image).long()
    n_img = sim.shape[0]
    per_image = torch.bincount(owner, minlength=n_img).double().numpy()
    out = {}
    for k in ks:
        out[f"image_to_text_R@{k}"] = ItemScores((i2t < k).double().numpy(), np.ones(n_img))
        hits = torch.bincount(owner, weights=(t2i < k).double(), minlength=n_img).numpy()
        out[f"text_to_image_R@{k}"] = ItemScores(hits, per_image)
    return out


def evaluate_retrieval(em: EvalModel, data: CaptionSet, batch_size: int = 64,
                       items: dict[str, ItemScores] | None = None, text_batch_size: int = 256) -> dict[str, float]:
    """Embed all images (``batch_size`` per forward) and captions (``text_batch_size``) of ``data`` with ``em``
    and return :func:`recall_metrics`; ``items``, when given, receives :func:`recall_items` under the same
    metric names. The similarity matrix and the ranks are computed on the CPU."""
    img = embed_images(em, data.image_paths, batch_size, desc="retrieval images")
    txt = embed_texts(em, data.captions, text_batch_size, desc="retrieval captions")
    sim = img @ txt.T
    metrics = recall_metrics(sim, data.caption_to_image)
    metrics.update(images=len(data.image_paths), captions=len(data.captions))
    if items is not None:
        items.update(recall_items(sim, data.caption_to_image))
    return metrics
