"""Training-free zero-shot segmentation with the SCLIP protocol (reference spec 7.3), and mIoU without mmseg.

Per image (``clip_segmentor.py`` of SCLIP / COSMOS):

1. resize so the short side is ``S`` (long side capped at 2048; mmcv ``Resize(keep_ratio=True)``, bilinear),
   normalize with the OpenAI mean/std;
2. slide ``crop`` windows with ``stride`` (last windows shifted to the border); per window, dense projected
   patch features (CSA in the last block), L2-normalized, cosine similarity to every class query, bilinear
   upsample to the window; overlapping logits summed and divided by the count;
3. bilinear upsample to the label's size;
4. ``× logit_scale``, softmax over queries, max over each class's synonym queries; optional ``area_thd``
   (foreground classes whose argmax area is at most ``area_thd`` × foreground area are zeroed); argmax;
   pixels whose max probability is below ``prob_thd`` go to class 0 (background).

Class queries: each synonym on a class line is one query, embedded as the renormalized mean of its
normalized template embeddings (80 OpenAI templates in the reference).

Batching and device: the windows of up to ``batch_images`` consecutive images of equal preprocessed size
are cut into one ``[B * n_windows, 3, crop, crop]`` tensor on ``em.device`` and encoded ``window_batch`` at a
time (all at once by default). Each window is encoded on its own (no attention across the batch), so this
gives the logits of SCLIP's one-window-at-a-time loop. Logit accumulation, upsampling and ``postprocess`` run
on the device too; only the ``[H, W]`` class map comes back to the CPU for the confusion matrix.

mIoU (mmseg ``IoUMetric``): a confusion matrix over pixels whose label is not 255; per class
IoU = TP / (TP + FP + FN). A class absent from both prediction and ground truth has 0/0 = NaN and is left
out of the mean (``nanmean``); a class predicted but absent from the ground truth has IoU 0 and counts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from cosmos.augment.multicrop import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from cosmos.eval.csa import dense_features
from cosmos.eval.embed import embed_texts, load_rgb
from cosmos.eval.seg_datasets import IGNORE_INDEX, SegDataset, SegSettings, load_label
from cosmos.eval.sources import EvalModel
from cosmos.report.intervals import ItemScores

__all__ = ["preprocess", "class_queries", "window_boxes", "slide_logits", "slide_logits_batch", "postprocess",
           "confusion_matrix", "iou_metrics", "predict", "evaluate_segmentation"]


def preprocess(img: Image.Image, short_side: int, long_cap: int = 2048) -> torch.Tensor:
    """``[1, 3, h, w]``: mmcv keep-ratio rescale to ``(long_cap, short_side)``, bilinear, then normalize."""
    w, h = img.size
    sf = min(long_cap / max(h, w), short_side / min(h, w))
    size = (int(h * sf + 0.5), int(w * sf + 0.5))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)
    if size != (h, w):  # cv2 INTER_LINEAR on uint8: no antialias, rounded back to uint8
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False).round().clamp(0, 255)
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1) * 255
    return (x - mean) / std


def class_queries(em: EvalModel, class_names: list[list[str]], templates: list[str],
                  text_batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """``(queries [Q, E] normalized, query_class [Q])`` on the CPU: one query per synonym."""
    names = [n for syns in class_names for n in syns]
    owner = torch.tensor([c for c, syns in enumerate(class_names) for _ in syns])
    emb = embed_texts(em, [t.format(n) for n in names for t in templates], text_batch_size, desc="class queries")
    q = F.normalize(emb.view(len(names), len(templates), -1).mean(1), dim=-1)
    return q, owner


@torch.no_grad()
def _window_logits(em: EvalModel, windows: torch.Tensor, queries: torch.Tensor, csa: bool) -> torch.Tensor:
    feats = F.normalize(dense_features(em.model.visual, windows, csa=csa), dim=-1)  # [B, gh, gw, E]
    logits = (feats @ queries.T).permute(0, 3, 1, 2)  # [B, Q, gh, gw]
    return F.interpolate(logits, size=windows.shape[-2:], mode="bilinear", align_corners=False)


@torch.no_grad()
def slide_logits(em: EvalModel, img: torch.Tensor, queries: torch.Tensor, crop: int, stride: int,
                 csa: bool = True) -> torch.Tensor:
    """``[Q, h, w]`` cosine logits of a ``[1, 3, h, w]`` image by sliding windows (SCLIP ``forward_slide``),
    on ``em.device``."""
    return slide_logits_batch(em, img, queries, crop, stride, csa)[0]


def window_boxes(h: int, w: int, crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """``(y1, y2, x1, x2)`` of every sliding window over an ``h x w`` image, row-major; the last row and column
    are shifted back to the border, so every window is ``min(crop, h) x min(crop, w)``."""
    n_h = max(h - crop + stride - 1, 0) // stride + 1
    n_w = max(w - crop + stride - 1, 0) // stride + 1
    boxes = []
    for i in range(n_h):
        for j in range(n_w):
            y2, x2 = min(i * stride + crop, h), min(j * stride + crop, w)
            boxes.append((max(y2 - crop, 0), y2, max(x2 - crop, 0), x2))
    return boxes


@torch.no_grad()
def slide_logits_batch(em: EvalModel, imgs: torch.Tensor, queries: torch.Tensor, crop: int, stride: int,
                       csa: bool = True, window_batch: int | None = None) -> torch.Tensor:
    """``[B, Q, h, w]`` on ``em.device``: :func:`slide_logits` of each of ``B`` same-size images ``[B, 3, h, w]``.

    Their ``B * n_windows`` windows are encoded ``window_batch`` per forward (``None``: all in one); each window
    is encoded on its own, so neither ``B`` nor ``window_batch`` changes a logit.
    """
    imgs, queries = imgs.to(em.device), queries.to(em.device)
    b, _, h, w = imgs.shape
    boxes = window_boxes(h, w, crop, stride)
    # [B * n_boxes, 3, c_h, c_w], image-major
    windows = torch.stack([imgs[..., y1:y2, x1:x2] for y1, y2, x1, x2 in boxes], dim=1).flatten(0, 1)
    step = window_batch or len(windows)
    if step < 1:
        raise ValueError(f"eval.segmentation.window_batch={window_batch} must be >= 1 (or null: all windows at once)")
    win_logits = torch.cat([_window_logits(em, windows[i:i + step], queries, csa)
                            for i in range(0, len(windows), step)]).unflatten(0, (b, len(boxes)))
    total = torch.zeros(b, queries.shape[0], h, w, device=imgs.device)
    count = torch.zeros(1, 1, h, w, device=imgs.device)
    for k, (y1, y2, x1, x2) in enumerate(boxes):
        total[..., y1:y2, x1:x2] += win_logits[:, k]
        count[..., y1:y2, x1:x2] += 1
    return total / count


def postprocess(logits: torch.Tensor, query_class: torch.Tensor, n_classes: int, settings: SegSettings) -> torch.Tensor:
    """``[H, W]`` class map from query logits ``[Q, H, W]`` (SCLIP ``postprocess_result``), on their device."""
    probs = (logits * settings.logit_scale).softmax(0)
    if n_classes != len(query_class):  # max over each class's synonym queries
        index = query_class.to(probs.device).view(-1, 1, 1).expand_as(probs)
        probs = torch.zeros(n_classes, *probs.shape[1:], device=probs.device).scatter_reduce(
            0, index, probs, "amax", include_self=False)
    if settings.area_thd is not None:
        area = torch.bincount(probs.argmax(0).flatten(), minlength=n_classes)[1:].float()
        keep = (area > settings.area_thd * area.sum()).float()
        probs[1:] *= keep.view(-1, 1, 1)
    pred = probs.argmax(0)
    pred[probs.max(0).values < settings.prob_thd] = 0
    return pred


def confusion_matrix(pred: torch.Tensor | np.ndarray, label: torch.Tensor | np.ndarray, n_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """``[C, C]`` int64 counts, rows = ground truth, columns = prediction; ``ignore_index`` pixels skipped."""
    pred, label = np.asarray(pred).astype(np.int64).ravel(), np.asarray(label).astype(np.int64).ravel()
    if pred.shape != label.shape:
        raise ValueError(f"prediction has {pred.size} pixels, label {label.size}")
    valid = label != ignore_index
    if (label[valid] >= n_classes).any() or (label[valid] < 0).any():
        raise ValueError(f"label values outside [0, {n_classes}) other than {ignore_index}")
    idx = label[valid] * n_classes + pred[valid]
    return np.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def iou_metrics(cm: np.ndarray) -> dict[str, np.ndarray | float]:
    """Per-class ``iou``/``acc`` (NaN where undefined) and ``mIoU``, ``mAcc``, ``aAcc`` in percent (nanmean)."""
    tp = np.diag(cm).astype(np.float64)
    gt, pr = cm.sum(1).astype(np.float64), cm.sum(0).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = tp / (gt + pr - tp)
        acc = tp / gt
    return {"iou": 100 * iou, "acc": 100 * acc,
            "mIoU": float(100 * np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
            "mAcc": float(100 * np.nanmean(acc)) if np.isfinite(acc).any() else float("nan"),
            "aAcc": float(100 * tp.sum() / max(cm.sum(), 1))}


@torch.no_grad()
def predict(em: EvalModel, img: Image.Image, out_size: tuple[int, int], queries: torch.Tensor,
            query_class: torch.Tensor, n_classes: int, settings: SegSettings, csa: bool = True) -> torch.Tensor:
    """``[H, W]`` CPU prediction at ``out_size`` (the label's size) for one PIL image."""
    x = preprocess(img, settings.short_side)
    logits = slide_logits(em, x, queries, settings.crop, settings.stride, csa)
    logits = F.interpolate(logits.unsqueeze(0), size=out_size, mode="bilinear", align_corners=False)[0]
    return postprocess(logits, query_class, n_classes, settings).cpu()


def _same_size_runs(items: list[tuple[torch.Tensor, Any]], max_len: int):
    """Consecutive runs of ``(tensor [1, 3, h, w], extra)`` items with equal ``h, w``, at most ``max_len`` long."""
    run: list = []
    for item in items:
        if run and (item[0].shape != run[0][0].shape or len(run) == max_len):
            yield run
            run = []
        run.append(item)
    if run:
        yield run


def evaluate_segmentation(em: EvalModel, data: SegDataset, templates: list[str], *, csa: bool = True,
                          keep_examples: int = 0, batch_images: int = 16, window_batch: int | None = None,
                          text_batch_size: int = 256,
                          items: dict[str, ItemScores] | None = None) -> tuple[dict, list[dict], list[tuple]]:
    """mIoU over ``data``. Returns ``(metrics, per-class rows, examples)``; examples are up to
    ``keep_examples`` tuples ``(image uint8 [H, W, 3], prediction [H, W], label [H, W])`` for pictures.
    ``items``, when given, receives ``mIoU`` as per-image intersection / union pixels ``[N, C]`` (IoU is
    additive over images, so the bootstrap resamples images exactly).

    Up to ``batch_images`` consecutive images of equal preprocessed size share their window forwards
    (:func:`slide_logits_batch`, ``window_batch`` windows each); the prediction of each image is the one
    :func:`predict` makes. Class queries are embedded ``text_batch_size`` prompts per forward.
    """
    if batch_images < 1:
        raise ValueError(f"eval.segmentation.batch_images={batch_images} must be >= 1")
    n = len(data.class_names)
    queries, owner = class_queries(em, data.class_names, templates, text_batch_size)
    queries, owner = queries.to(em.device), owner.to(em.device)
    cm = np.zeros((n, n), dtype=np.int64)
    inter, union = [], []
    examples = []
    progress = tqdm(total=len(data.pairs), desc=f"{em.label} {data.name}", leave=False)
    for start in range(0, len(data.pairs), batch_images):
        loaded = []
        for img_path, lbl_path in data.pairs[start:start + batch_images]:
            label = load_label(lbl_path, data.reduce_zero_label)
            img = load_rgb(img_path)
            if img.size != (label.shape[1], label.shape[0]):
                raise ValueError(f"{img_path} is {img.size[::-1]} but its label {lbl_path} is {label.shape}")
            loaded.append((preprocess(img, data.settings.short_side), (img, label)))
        for run in _same_size_runs(loaded, batch_images):
            logits = slide_logits_batch(em, torch.cat([x for x, _ in run]), queries, data.settings.crop,
                                        data.settings.stride, csa, window_batch)
            for lg, (_, (img, label)) in zip(logits, run):
                lg = F.interpolate(lg.unsqueeze(0), size=label.shape, mode="bilinear", align_corners=False)[0]
                pred = postprocess(lg, owner, n, data.settings).cpu()
                one = confusion_matrix(pred, label, n)
                cm += one
                tp = np.diag(one)
                inter.append(tp)
                union.append(one.sum(0) + one.sum(1) - tp)
                if len(examples) < keep_examples:
                    examples.append((np.asarray(img), pred.numpy(), label))
            progress.update(len(run))
    progress.close()
    res = iou_metrics(cm)
    rows = [{"class": names[0], "iou": float(res["iou"][c]), "acc": float(res["acc"][c]),
             "gt_pixels": int(cm[c].sum()), "pred_pixels": int(cm[:, c].sum())}
            for c, names in enumerate(data.class_names)]
    metrics = {"mIoU": res["mIoU"], "mAcc": res["mAcc"], "aAcc": res["aAcc"], "images": len(data.pairs),
               "classes": n, "csa": csa, **{k: v for k, v in data.settings.__dict__.items()}}
    if items is not None:
        items["mIoU"] = ItemScores(np.stack(inter), np.stack(union))
    return metrics, rows, examples
