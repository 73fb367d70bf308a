"""A batch-first fused forward for OpenCLIP's transformer stack: same parameters, same math, fewer copies.

OpenCLIP's ``ResidualAttentionBlock`` runs ``nn.MultiheadAttention(batch_first=True)``, which transposes its
input to sequence-first and so hands a non-contiguous ``[L, N, W]`` tensor to the packed QKV projection.
On CPU under bf16 autocast that projection falls back to a broadcast ``bmm`` that first materialises the
weight once per sequence position (``[197, 384, 1152]`` per ViT block at 224 px); in fp32 the transposes
still cost copies, and the text tower adds a float causal mask that the attention kernel cannot skip.

:func:`run_blocks` computes the same block over the block's own modules (``ln_1``, ``attn.in_proj_*``,
``attn.out_proj``, ``ls_1``, ``ln_2``, ``mlp``, ``ls_2``) without leaving the batch-first layout:

    x = x + ls_1(out_proj(SDPA(q, k, v)))   with [q k v] = ln_1(x) @ in_proj_weight.T + in_proj_bias
    x = x + ls_2(mlp(ln_2(x)))

and replaces the ``-inf`` upper-triangular mask by ``is_causal=True`` (the same masked softmax; the fused
kernel then skips the masked blocks). The result equals the stock forward up to floating-point
reassociation (tests: ``tests/models/test_blocks.py``). Parameters, state-dict names and initialisation are
untouched, so checkpoints move freely between the two paths.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["check_fusable", "run_blocks"]


def check_fusable(transformer: nn.Module) -> None:
    """Fail loudly unless every block is the plain OpenCLIP self-attention block :func:`run_blocks` computes."""
    for i, block in enumerate(transformer.resblocks):
        attn = getattr(block, "attn", None)
        if not isinstance(attn, nn.MultiheadAttention) or hasattr(block, "ln_1_kv"):
            raise NotImplementedError(f"block {i} ({type(block).__name__}) is not an OpenCLIP ResidualAttentionBlock "
                                      "with nn.MultiheadAttention; set model.fused_blocks=false")
        if not attn._qkv_same_embed_dim or attn.bias_k is not None or attn.add_zero_attn or attn.in_proj_bias is None:
            raise NotImplementedError(f"block {i}: fused_blocks needs packed QKV with biases and no bias_kv / "
                                      "zero_attn; set model.fused_blocks=false")


def _self_attention(attn: nn.MultiheadAttention, x: torch.Tensor, causal: bool) -> torch.Tensor:
    """``[N, L, W] -> [N, L, W]``: packed QKV projection, SDPA over ``H`` heads, output projection."""
    n, length, width = x.shape
    heads = attn.num_heads
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)  # [N, L, 3W]
    q, k, v = qkv.view(n, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4).unbind(0)  # 3 x [N, H, L, D]
    dropout = attn.dropout if attn.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=causal)  # [N, H, L, D]
    return attn.out_proj(out.transpose(1, 2).reshape(n, length, width))


def _block(block: nn.Module, x: torch.Tensor, causal: bool) -> torch.Tensor:
    x = x + block.ls_1(_self_attention(block.attn, block.ln_1(x), causal))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def run_blocks(transformer: nn.Module, x: torch.Tensor, causal: bool) -> torch.Tensor:
    """OpenCLIP ``Transformer.forward`` on batch-first ``x [N, L, W]``; ``causal`` stands for the text mask.

    Honours ``transformer.grad_checkpointing`` as OpenCLIP does (non-reentrant checkpoint per block).
    """
    for block in transformer.resblocks:
        if transformer.grad_checkpointing and torch.is_grad_enabled():
            x = checkpoint(_block, block, x, causal, use_reentrant=False)
        else:
            x = _block(block, x, causal)
    return x
