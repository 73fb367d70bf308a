"""Batched, no-grad embeddings shared by every evaluator (spec 7.1: L2-normalized global features).

Images are decoded and transformed on the CPU, stacked ``[B, 3, H, W]`` and moved to ``em.device``; captions
are tokenized on the CPU ``[B, L]`` and moved likewise. Embeddings come back as float32 CPU tensors.

Batch sizes are part of the numerics: a CPU GEMM's blocking depends on the batch, so the same image can
embed with a last-bit difference at another batch size. ``eval.batch_size`` (64) and
``eval.text_batch_size`` (256) are the sizes every published number was computed with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from cosmos.eval.sources import EvalModel

__all__ = ["load_rgb", "embed_images", "embed_texts", "batches"]


def load_rgb(path: str | Path) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")


def batches(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


@torch.no_grad()
def embed_images(em: EvalModel, paths: Sequence[str | Path], batch_size: int = 64,
                 transform: Callable | None = None, desc: str = "images") -> torch.Tensor:
    """``[N, E]`` normalized image embeddings of the files, through the eval transform."""
    transform = transform or em.transform
    chunks = []
    for chunk in tqdm(list(batches(list(paths), batch_size)), desc=f"{em.label} {desc}", leave=False):
        images = torch.stack([transform(load_rgb(p)) for p in chunk]).to(em.device)
        chunks.append(em.model.encode_image(images, normalize=True).float().cpu())
    if not chunks:
        raise ValueError("no images to embed")
    return torch.cat(chunks)


@torch.no_grad()
def embed_texts(em: EvalModel, texts: Sequence[str], batch_size: int = 256, desc: str = "texts") -> torch.Tensor:
    """``[M, E]`` normalized text embeddings (tokenized to the model's context length)."""
    chunks = []
    for chunk in tqdm(list(batches(list(texts), batch_size)), desc=f"{em.label} {desc}", leave=False):
        tokens = em.tokenizer(list(chunk)).to(em.device)
        chunks.append(em.model.encode_text(tokens, normalize=True).float().cpu())
    if not chunks:
        raise ValueError("no texts to embed")
    return torch.cat(chunks)
