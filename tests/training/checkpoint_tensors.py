"""Every tensor a training checkpoint carries, flat, for "same weights as an uninterrupted run" checks."""

from __future__ import annotations

from pathlib import Path

import torch


def checkpoint_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Student (``s.``), teacher (``t.``) and AdamW state (``o.<param index>.``) tensors of a checkpoint."""
    ckpt = torch.load(path, weights_only=True)
    out = {f"s.{k}": v for k, v in ckpt["student"].items()} | {f"t.{k}": v for k, v in ckpt["teacher"].items()}
    for index, state in ckpt["optimizer"]["state"].items():
        out |= {f"o.{index}.{k}": v for k, v in state.items()}
    return out
