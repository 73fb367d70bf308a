"""Dense patch features for segmentation, with SCLIP's correlative self-attention (CSA; spec 7.3).

CSA (``transformer.py:687-694, 731-764`` of the COSMOS fork, identical to SCLIP's ``custom_attn``) replaces
the attention of the *last* ViT block only. With x̂ = ln_1(x) and per head q, k, v = in_proj(x̂) split
into heads of width d, s = d^-1/2:

    A = softmax(s·q·qᵀ) + softmax(s·k·kᵀ)      (rows sum to 2; no renormalization)
    x ← x + out_proj(A·v)
    x ← x + mlp(ln_2(x))                         (residual and FFN kept, as in SCLIP's code)

It is written over an OpenCLIP ``ResidualAttentionBlock``'s own weights (``attn.in_proj_weight``,
``attn.out_proj``, ``ln_1``, ``ln_2``, ``mlp``, layer scales), so any OpenCLIP ViT works unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cosmos.models.pos_embed import interpolate_pos_encoding
from cosmos.models.towers import check_vision_tower

__all__ = ["csa_attention", "csa_block", "dense_features"]


def csa_attention(attn: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """CSA over batch-first tokens ``x [N, L, D]`` (already ln_1-ed); returns ``out_proj(A·v) [N, L, D]``."""
    if attn.in_proj_weight is None:
        raise NotImplementedError("CSA needs the packed in_proj_weight of a self-attention block")
    n, length, dim = x.shape
    heads = attn.num_heads
    hd = dim // heads
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.reshape(n, length, heads, hd).transpose(1, 2) for t in (q, k, v))  # [N, h, L, hd]
    scale = hd ** -0.5
    a = (q @ q.transpose(-2, -1) * scale).softmax(-1) + (k @ k.transpose(-2, -1) * scale).softmax(-1)
    out = (a @ v).transpose(1, 2).reshape(n, length, dim)
    return attn.out_proj(out)


def csa_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One OpenCLIP ``ResidualAttentionBlock`` with its attention replaced by CSA; ``x [N, L, D]``."""
    x = x + block.ls_1(csa_attention(block.attn, block.ln_1(x)))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def dense_features(visual: nn.Module, images: torch.Tensor, csa: bool = True) -> torch.Tensor:
    """Projected patch features ``[N, H/p, W/p, E]`` (unnormalized) of an OpenCLIP ViT.

    Same computation as :func:`cosmos.models.towers.vision_forward` (interpolated positions, ln_pre, blocks,
    ln_post over all tokens), then patch tokens without CLS ``@ visual.proj`` (spec 2.3), with CSA in the
    last block when ``csa``. Without CSA it equals ``CosmosCLIP.encode_image_dense`` reshaped.
    """
    check_vision_tower(visual)
    x = visual.conv1(images)
    gh, gw = x.shape[-2:]
    x = x.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1)
    x = x + interpolate_pos_encoding(visual.positional_embedding, (gh, gw), tuple(visual.grid_size)).to(x.dtype)
    x = visual.ln_pre(visual.patch_dropout(x))
    batch_first = getattr(visual.transformer, "batch_first", True)
    blocks = list(visual.transformer.resblocks)
    if not batch_first:
        x = x.transpose(0, 1)
    for blk in blocks[:-1]:
        x = blk(x)
    if csa:
        x = csa_block(blocks[-1], x if batch_first else x.transpose(0, 1))
        x = x if batch_first else x.transpose(0, 1)
    else:
        x = blocks[-1](x)
    if not batch_first:
        x = x.transpose(0, 1)
    tokens = visual.ln_post(x)[:, 1:] @ visual.proj
    return tokens.reshape(tokens.shape[0], gh, gw, -1)
