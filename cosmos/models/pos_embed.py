"""Resizing a ViT's learnable positional-embedding table to another patch grid (reference spec 1.4).

COSMOS feeds the ViT crops of several sizes: 224-px global crops and 96-px local crops for B/16. The
reference ``VisionTransformer.forward`` always calls a DINO-style ``interpolate_pos_encoding``:

- At the native grid it returns the table unchanged, so 224-px inputs see exactly the trained table.
- Otherwise the g x g patch part of the table is resized to the n x n grid of the input with
  ``F.interpolate(..., scale_factor=((n + 0.1) / g, (n + 0.1) / g), mode="bicubic")``, with the default
  ``align_corners=False`` and no antialias. The class-token row is kept as it is.

The ``+0.1`` matters. ``scale_factor`` makes PyTorch sample the source at ``(i + 0.5) / s - 0.5`` with the
*given* scale ``s``, not with ``n / g``. So ``size=(n, n)`` samples different points: for B/16 at 96 px the
two differ by about 1.2 (max abs) on random-normal tables. The output size is ``floor(g * s)``, and the
``+0.1`` keeps that floor at ``n`` despite rounding. Gradients flow through the resize, so local crops also
train the positional table.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["interpolate_pos_encoding"]


def interpolate_pos_encoding(
    pos_embed: torch.Tensor,
    grid: tuple[int, int],
    native_grid: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Return the positional table for a ``grid = (gh, gw)`` patch grid; identity at the native grid.

    Args:
        pos_embed: ``[1 + G_h * G_w, W]``, class-token row first, then the patch rows in row-major order (the
            OpenCLIP ``VisionTransformer.positional_embedding`` layout, no batch dimension).
        grid: ``(n_h, n_w)``, the patch grid of the input, i.e. ``(H // patch, W // patch)``.
        native_grid: ``(G_h, G_w)`` of the table. If omitted, the table must be square.

    Returns:
        ``[1 + n_h * n_w, W]``. The same tensor object when ``grid == native_grid``; otherwise the class row
        concatenated with the bicubically resized patch rows (reference spec 1.4).
    """
    if pos_embed.ndim != 2:
        raise ValueError(f"pos_embed must be [1 + G*G, W], got shape {tuple(pos_embed.shape)}")
    n_patches = pos_embed.shape[0] - 1
    if native_grid is None:
        side = math.isqrt(n_patches)
        if side * side != n_patches:
            raise ValueError(f"{n_patches} patch positions are not a square grid; pass native_grid")
        native_grid = (side, side)
    g_h, g_w = native_grid
    if g_h * g_w != n_patches:
        raise ValueError(f"native_grid {native_grid} does not match {n_patches} patch positions")
    n_h, n_w = grid
    if (n_h, n_w) == (g_h, g_w):
        return pos_embed

    width = pos_embed.shape[1]
    cls_pos, patch_pos = pos_embed[:1], pos_embed[1:]
    patch_pos = patch_pos.reshape(1, g_h, g_w, width).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(
        patch_pos,
        scale_factor=((n_h + 0.1) / g_h, (n_w + 0.1) / g_w),
        mode="bicubic",
        align_corners=False,
    )
    # The +0.1 exists to make this floor land on n; fail loudly rather than mis-align tokens and positions.
    if tuple(patch_pos.shape[-2:]) != (n_h, n_w):
        raise RuntimeError(f"resized grid {tuple(patch_pos.shape[-2:])} != requested {(n_h, n_w)}")
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(n_h * n_w, width)
    return torch.cat([cls_pos, patch_pos], dim=0)
