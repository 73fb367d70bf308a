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
reassociation (tests: ``tests/method/test_speedups.py``). Parameters, state-dict names and initialisation are
untouched, so checkpoints move freely between the two paths.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.checkpoint import checkpoint

__all__ = ["MATH_ATTENTION_MAX_KEYS", "attention_kernel", "check_fusable", "run_blocks", "run_blocks_pooled_tail"]

# Up to this many keys, torch's math SDPA kernel beats the CPU flash kernel in bf16 forward + backward
# (measured 2.5-7x at 17-77 keys, 0.8x at 197; docs/training.md).
MATH_ATTENTION_MAX_KEYS = 128


def attention_kernel(q: torch.Tensor, keys: int, math_attention: bool):
    """The SDPA kernel context for an attention over ``keys`` positions (``model.math_attention``).

    On CPU with low-precision inputs and at most :data:`MATH_ATTENTION_MAX_KEYS` keys it pins torch's math
    kernel, which computes the scores and the softmax in fp32 (as accurate as the flash kernel, whose CPU
    bf16 backward is slow at short sequences); everywhere else it leaves torch's own choice.
    """
    if math_attention and q.device.type == "cpu" and _low_precision(q) and keys <= MATH_ATTENTION_MAX_KEYS:
        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


def _low_precision(q: torch.Tensor) -> bool:
    if q.dtype in (torch.bfloat16, torch.float16):
        return True
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") in (torch.bfloat16, torch.float16)


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


def _self_attention(attn: nn.MultiheadAttention, x: torch.Tensor, causal: bool, math_attention: bool) -> torch.Tensor:
    """``[N, L, W] -> [N, L, W]``: packed QKV projection, SDPA over ``H`` heads, output projection."""
    n, length, width = x.shape
    heads = attn.num_heads
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)  # [N, L, 3W]
    q, k, v = qkv.view(n, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4).unbind(0)  # 3 x [N, H, L, D]
    dropout = attn.dropout if attn.training else 0.0
    with attention_kernel(q, length, math_attention):
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=causal)  # [N, H, L, D]
    return attn.out_proj(out.transpose(1, 2).reshape(n, length, width))


def _first_token_attention(attn: nn.MultiheadAttention, x: torch.Tensor, math_attention: bool) -> torch.Tensor:
    """``[N, L, W] -> [N, 1, W]``: the attention output of position 0 only (keys and values from all L)."""
    n, length, width = x.shape
    heads, d = attn.num_heads, width // attn.num_heads
    w, b = attn.in_proj_weight, attn.in_proj_bias
    q = F.linear(x[:, :1], w[:width], b[:width]).view(n, 1, heads, d).transpose(1, 2)  # [N, H, 1, D]
    k, v = F.linear(x, w[width:], b[width:]).view(n, length, 2, heads, d).permute(2, 0, 3, 1, 4).unbind(0)
    dropout = attn.dropout if attn.training else 0.0
    with attention_kernel(q, length, math_attention):
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)  # [N, H, 1, D]
    return attn.out_proj(out.transpose(1, 2).reshape(n, 1, width))


def _block(block: nn.Module, x: torch.Tensor, causal: bool, math_attention: bool) -> torch.Tensor:
    x = x + block.ls_1(_self_attention(block.attn, block.ln_1(x), causal, math_attention))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def _first_token_block(block: nn.Module, x: torch.Tensor, math_attention: bool) -> torch.Tensor:
    """The block's output at position 0 only, ``[N, L, W] -> [N, 1, W]`` (bidirectional attention)."""
    x0 = x[:, :1] + block.ls_1(_first_token_attention(block.attn, block.ln_1(x), math_attention))
    return x0 + block.ls_2(block.mlp(block.ln_2(x0)))


def _run(fn, transformer: nn.Module, *args):
    if transformer.grad_checkpointing and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


def run_blocks(transformer: nn.Module, x: torch.Tensor, causal: bool, math_attention: bool = False) -> torch.Tensor:
    """OpenCLIP ``Transformer.forward`` on batch-first ``x [N, L, W]``; ``causal`` stands for the text mask.

    Honours ``transformer.grad_checkpointing`` as OpenCLIP does (non-reentrant checkpoint per block).
    ``math_attention``: see :func:`attention_kernel`.
    """
    for block in transformer.resblocks:
        x = _run(_block, transformer, block, x, causal, math_attention)
    return x


def run_blocks_pooled_tail(transformer: nn.Module, x: torch.Tensor, keep_rows: int,
                           math_attention: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`run_blocks` (bidirectional) where rows ``keep_rows:`` need only their position-0 (CLS) output.

    Every block but the last runs on all rows. In the last block the first ``keep_rows`` rows run in full,
    the others compute keys and values over all positions but the query, output projection and MLP at
    position 0 only: no later layer reads their other positions, so their CLS output is unchanged
    (``model.trim_vision``; about 10/12 of the last block's per-token FLOPs are skipped for those rows).

    Returns ``(x[:keep_rows] [K, L, W], x[keep_rows:, :1] [N-K, 1, W])`` after the last block.
    """
    blocks = list(transformer.resblocks)
    for block in blocks[:-1]:
        x = _run(_block, transformer, block, x, False, math_attention)
    head = _run(_block, transformer, blocks[-1], x[:keep_rows], False, math_attention) if keep_rows else x[:0]
    tail = (_run(_first_token_block, transformer, blocks[-1], x[keep_rows:], math_attention)
            if keep_rows < len(x) else x[:0, :1])
    return head, tail
