"""Qualitative pictures: segmentation overlays and the two COSMOS cross-attention maps (paper Fig. 1 / 5 style).

- :func:`save_segmentation_grid`: rows of image | ground truth | prediction, VOC colours, ignore in black.
- :func:`cross_attention_maps`: for an (image, caption) pair, the attention of the caption's global embedding
  over the image patches (``visual.attn_cross_pool``, C^I) and of the image's global embedding over the caption
  tokens (``text_attn_cross_pool``, C^T), head-averaged. Queries and keys are built exactly as in training
  (spec 1.2): unnormalized global embeddings as queries, mapped tokens (``image_token_mapping`` /
  ``text_token_mapping``) as keys and values.
- :func:`save_cross_attention_figure`: those maps as one PNG.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from cosmos.data.formats.voc import IGNORE_INDEX, voc_palette  # noqa: E402
from cosmos.eval.embed import load_rgb  # noqa: E402
from cosmos.eval.sources import EvalModel  # noqa: E402
from cosmos.models.towers import text_forward, vision_forward  # noqa: E402

__all__ = ["colorize", "save_segmentation_grid", "cross_attention_maps", "save_cross_attention_figure"]


def colorize(label: np.ndarray) -> np.ndarray:
    """``[H, W]`` class map -> ``[H, W, 3]`` uint8 in VOC colours (class k gets VOC colour k+1; ignore black)."""
    pal = np.array(voc_palette(), dtype=np.uint8).reshape(256, 3)
    lab = np.asarray(label).astype(np.int64)
    out = pal[np.clip(lab + 1, 0, 255)]
    out[lab == IGNORE_INDEX] = 0
    return out


def save_segmentation_grid(examples: list[tuple], class_names: list[list[str]], path: str | Path, title: str) -> Path:
    """One PNG: a row per example (image, ground truth, prediction) plus a legend of the classes shown."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(len(examples), 3, figsize=(7.5, 2.5 * len(examples)), squeeze=False)
    shown = set()
    for row, (img, pred, label) in zip(axes, examples):
        for ax, pic, name in zip(row, (img, colorize(label), colorize(pred)), ("image", "ground truth", "prediction")):
            ax.imshow(pic, interpolation="nearest")
            ax.set_title(name, fontsize=8)
            ax.axis("off")
        shown |= {int(c) for c in np.unique(np.concatenate([pred.ravel(), label.ravel()])) if c != IGNORE_INDEX}
    pal = colorize(np.array(sorted(shown))).reshape(-1, 3) / 255.0
    handles = [plt.Rectangle((0, 0), 1, 1, color=pal[i]) for i in range(len(shown))]
    fig.legend(handles, [class_names[c][0] for c in sorted(shown)], loc="lower center", ncol=4, fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 0.97))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


@torch.no_grad()
def cross_attention_maps(em: EvalModel, image: torch.Tensor, caption: str) -> dict[str, np.ndarray | list[str]]:
    """``image_map [gh, gw]`` (caption query over patches), ``text_weights [n]`` and ``tokens`` (image query
    over the caption's tokens, SOT..EOT; padding attention is dropped from the plot but not from the softmax).

    ``image`` is one transformed image ``[3, H, W]``; the model must be a CosmosCLIP.
    """
    if not em.is_cosmos:
        raise ValueError("cross-attention maps need a COSMOS model (with attn_cross_pool modules)")
    m = em.model
    ids = em.tokenizer([caption])
    image = image.unsqueeze(0).to(em.device)
    img_feat, img_tok = vision_forward(m.visual, image)
    txt_feat, txt_tok = text_forward(m, ids.to(em.device))
    _, w_img = m.visual.attn_cross_pool(txt_feat, m.image_token_mapping(img_tok), return_attention=True)
    _, w_txt = m.text_attn_cross_pool(img_feat, m.text_token_mapping(txt_tok), return_attention=True)
    w_img, w_txt = w_img.cpu(), w_txt.cpu()
    grid = m.visual.conv1(image).shape[-2:]
    n = int(ids[0].argmax()) + 1  # up to and including EOT (the highest id)
    decoder = getattr(em.tokenizer, "decoder", {})
    tokens = [decoder.get(int(t), str(int(t))).replace("</w>", "") for t in ids[0, :n]]
    return {"image_map": w_img[0, 0].reshape(*grid).numpy(), "text_weights": w_txt[0, 0, :n].numpy(),
            "tokens": tokens}


def save_cross_attention_figure(em: EvalModel, items: list[tuple[Path, str]], path: str | Path) -> Path:
    """One PNG with a row per (image file, caption): image, C^I map over the image, C^T weights over tokens."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(len(items), 3, figsize=(12, 2.8 * len(items)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 2.5]})
    for row, (img_path, caption) in zip(axes, items):
        pil = load_rgb(img_path)
        maps = cross_attention_maps(em, em.transform(pil), caption)
        row[0].imshow(pil)
        row[0].set_title(caption[:60], fontsize=7)
        row[1].imshow(pil)
        row[1].imshow(maps["image_map"], cmap="jet", alpha=0.5, extent=(0, pil.width, pil.height, 0),
                      interpolation="bilinear")
        row[1].set_title("caption -> image patches (C^I)", fontsize=7)
        row[2].bar(range(len(maps["tokens"])), maps["text_weights"])
        row[2].set_xticks(range(len(maps["tokens"])), maps["tokens"], rotation=70, fontsize=6)
        row[2].set_title("image -> caption tokens (C^T)", fontsize=7)
        for ax in row[:2]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
