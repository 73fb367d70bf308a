"""Token-returning forward passes for OpenCLIP's vision and text towers (reference spec 1.1 and 1.4).

The stock OpenCLIP ``VisionTransformer.forward`` adds the positional table without resizing it, so it
rejects the 96-px local crops. The COSMOS fork replaced it with a forward that always interpolates the table
and returns the patch tokens as well (``--output-all``). Here the same computation is written as functions
over the tower's existing submodules instead of a subclass. The OpenCLIP modules stay untouched, so
state-dict names and initialization are exactly OpenCLIP's, and a tower built by ``open_clip`` can be used
as it is.
"""

from __future__ import annotations

import torch
from torch import nn
from open_clip.transformer import VisionTransformer, text_global_pool

from cosmos.models.pos_embed import interpolate_pos_encoding

__all__ = ["check_vision_tower", "vision_forward", "text_forward"]


def check_vision_tower(visual: nn.Module) -> None:
    """Fail loudly unless ``visual`` is the plain CLS-pooled OpenCLIP ViT that COSMOS uses."""
    if not isinstance(visual, VisionTransformer):
        raise NotImplementedError(
            f"COSMOS needs an OpenCLIP VisionTransformer tower, got {type(visual).__name__} "
            "(timm and ResNet towers are not supported)"
        )
    if visual.attn_pool is not None or visual.pool_type != "tok" or visual.final_ln_after_pool:
        raise NotImplementedError(
            "COSMOS expects CLS-token pooling after ln_post (pool_type='tok', no attentional_pool, "
            "final_ln_after_pool=False), as in the reference ViT-B configs"
        )


def vision_forward(visual: VisionTransformer, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the ViT on ``images`` of any size that is a multiple of the patch size.

    Reference ``VisionTransformer.forward`` with ``output_all`` (``transformer.py:636-729``): patch embed,
    CLS, interpolated positional table (spec 1.4), ln_pre, blocks, ln_post over all tokens, then CLS ``@ proj``.

    Args:
        visual: an OpenCLIP ``VisionTransformer`` (checked by :func:`check_vision_tower`).
        images: ``[N, 3, H, W]``.

    Returns:
        pooled: ``[N, E]``, the unnormalized global image embedding (CLS after ln_post, ``@ visual.proj``).
        tokens: ``[N, (H/p) * (W/p), W_v]``, the patch tokens after ln_post, without CLS and before any projection.
    """
    x = visual.conv1(images)  # [N, W_v, gh, gw]
    grid = (x.shape[-2], x.shape[-1])
    x = x.flatten(2).transpose(1, 2)  # [N, gh*gw, W_v]
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1)
    pos = interpolate_pos_encoding(visual.positional_embedding, grid, tuple(visual.grid_size))
    x = x + pos.to(x.dtype)
    x = visual.patch_dropout(x)
    x = visual.ln_pre(x)
    x = visual.transformer(x)
    x = visual.ln_post(x)
    pooled, tokens = x[:, 0], x[:, 1:]
    return pooled @ visual.proj, tokens


def text_forward(clip: nn.Module, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the text transformer held by an OpenCLIP ``CLIP`` and return pooled and per-position outputs.

    Reference ``encode_text`` with ``output_all`` (``model.py:314-329``, ``transformer.py:772-775``).

    Args:
        clip: the model holding ``token_embedding``, ``positional_embedding``, ``transformer``, ``ln_final``,
            ``text_projection`` and the causal ``attn_mask``.
        text: ``[M, L]`` token ids, where L must equal the model's ``context_length``.

    Returns:
        pooled: ``[M, E]``, the unnormalized EOT (argmax id) output after ln_final, ``@ text_projection``.
        tokens: ``[M, L, W_t]``, all L positions after ln_final. SOT, EOT and zero-padding positions are all
            included, because the reference cross-attention has no padding mask.
    """
    if text.ndim != 2 or text.shape[1] != clip.context_length:
        raise ValueError(f"text must be [M, {clip.context_length}] token ids, got {tuple(text.shape)}")
    cast_dtype = clip.transformer.get_cast_dtype()
    x = clip.token_embedding(text).to(cast_dtype) + clip.positional_embedding.to(cast_dtype)
    x = clip.transformer(x, attn_mask=clip.attn_mask)
    tokens = clip.ln_final(x)
    pooled = text_global_pool(tokens, text, clip.text_pool_type, eos_token_id=getattr(clip, "text_eos_id", None))
    proj = clip.text_projection
    if isinstance(proj, nn.Linear):
        pooled = proj(pooled)
    elif proj is not None:
        pooled = pooled @ proj
    return pooled, tokens
