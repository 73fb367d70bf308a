"""COSMOS cross-attention module that turns one modality's tokens into a cross-modal embedding.

Reference: ``AttentionalCrossPooler`` (spec 1.2, ``transformer.py:210-230`` of the COSMOS fork). COSMOS uses
two instances:

- ``visual.attn_cross_pool`` is the paper's C^I. A text embedding queries the image tokens.
- ``text_attn_cross_pool`` is the paper's C^T. An image embedding queries the text tokens.

The module is deliberately bare: LayerNorm on the query, LayerNorm on the key/value tokens, one
``nn.MultiheadAttention``. There is no MLP, no residual inside, no output norm, no key-padding mask, and no
dropout. The residual onto the unnormalized global embedding is added by the caller
(:class:`cosmos.models.cosmos_clip.CosmosCLIP`).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from open_clip.transformer import LayerNorm

__all__ = ["AttentionalCrossPooler"]


class AttentionalCrossPooler(nn.Module):
    """Cross-attention from a query embedding onto a token sequence of the other modality (spec 1.2).

    State-dict keys match the reference: ``attn.in_proj_weight`` ``[3D, D]``, ``attn.in_proj_bias`` ``[3D]``,
    ``attn.out_proj.weight`` ``[D, D]``, ``attn.out_proj.bias`` ``[D]``, ``ln_q.{weight,bias}`` ``[D]`` and
    ``ln_k.{weight,bias}`` ``[C]``. The packed ``in_proj_weight`` exists only when ``context_dim == d_model``,
    which holds for every COSMOS model, because both token mappings project to ``embed_dim``. Otherwise
    PyTorch stores separate ``q/k/v_proj_weight`` tensors.

    Args:
        d_model: query and output width D (``embed_dim`` in COSMOS).
        context_dim: width C of the key/value tokens.
        n_head: attention heads. The reference fixes 8, so head_dim is 64 at D = 512.
        norm_layer: LayerNorm class. OpenCLIP's ``LayerNorm`` casts back to the input dtype under autocast.
    """

    def __init__(
        self,
        d_model: int,
        context_dim: int,
        n_head: int = 8,
        norm_layer: Callable[[int], nn.Module] = LayerNorm,
    ):
        super().__init__()
        if d_model % n_head != 0:
            raise ValueError(f"d_model={d_model} is not divisible by n_head={n_head}")
        # Registration order (attn, ln_q, ln_k) fixes named_parameters() order to match the reference.
        self.attn = nn.MultiheadAttention(d_model, n_head, kdim=context_dim, vdim=context_dim)
        self.ln_q = norm_layer(d_model)
        self.ln_k = norm_layer(context_dim)

    def forward(
        self,
        query: torch.Tensor,
        context: torch.Tensor,
        return_attention: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attend from ``query`` over ``context``.

        Args:
            query: ``[N, D]`` (one query per sample) or ``[N, Q, D]``.
            context: ``[N, L, C]`` key/value tokens. All L positions are attended; text padding included.
            return_attention: also return the attention map averaged over heads, ``[N, Q, L]``, e.g. for
                qualitative maps. This takes PyTorch's slower weighted path, so training leaves it off.

        Returns:
            ``[N, Q, D]`` (``[N, 1, D]`` for a 2-D query), and the ``[N, Q, L]`` map if asked.
        """
        if query.ndim == 2:
            query = query.unsqueeze(1)
        if query.ndim != 3 or context.ndim != 3 or query.shape[0] != context.shape[0]:
            raise ValueError(
                f"expected query [N, Q, D] and context [N, L, C] with equal N, "
                f"got {tuple(query.shape)} and {tuple(context.shape)}"
            )
        # The reference MHA is sequence-first (L, N, D); transpose rather than batch_first=True so the
        # module's attributes match the fork's exactly.
        kv = self.ln_k(context).transpose(0, 1)
        q = self.ln_q(query).transpose(0, 1)
        out, weights = self.attn(q, kv, kv, need_weights=return_attention)
        out = out.transpose(0, 1)
        if return_attention:
            return out, weights
        return out
