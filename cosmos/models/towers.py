"""Token-returning forward passes for OpenCLIP's vision and text towers (reference spec 1.1 and 1.4).

The stock OpenCLIP ``VisionTransformer.forward`` adds the positional table without resizing it, so it
rejects the 96-px local crops. The COSMOS fork replaced it with a forward that always interpolates the table
and returns the patch tokens as well (``--output-all``). Here the same computation is written as functions
over the tower's existing submodules instead of a subclass. The OpenCLIP modules stay untouched, so
state-dict names and initialization are exactly OpenCLIP's, and a tower built by ``open_clip`` can be used
as it is.

Three exact speed-ups (issue 12; each a switch of :class:`~cosmos.models.cosmos_clip.CosmosCLIP`, on by default,
each tested equal to the stock path):

- ``fused``: the transformer stack runs through :func:`cosmos.models.blocks.run_blocks` (batch-first SDPA,
  ``is_causal`` for the text mask) instead of OpenCLIP's ``nn.MultiheadAttention`` blocks;
- ``token_rows`` of :func:`text_forward`: rows whose per-position outputs nobody reads are cut after their
  last EOT. Under the causal mask, positions past the EOT never reach the EOT output, so the pooled
  embedding is unchanged; only rows whose tokens feed the cross-attention keep all L positions. The bucket
  lengths are shapes, so they are read on the host: from ``text_ends`` when the caller has them there
  (:func:`cosmos.method.collate`), else from the device, a sync in the middle of the forward;
- ``token_rows`` of :func:`vision_forward` (with ``fused``): crops whose patch tokens nobody reads run their
  last block for the CLS position only; no later layer reads the other positions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from open_clip.transformer import VisionTransformer, text_global_pool

from cosmos.models.blocks import run_blocks, run_blocks_pooled_tail
from cosmos.models.pos_embed import interpolate_pos_encoding

__all__ = ["check_vision_tower", "vision_forward", "text_forward", "trim_buckets"]


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


def vision_forward(visual: VisionTransformer, images: torch.Tensor, fused: bool = False,
                   token_rows: int | None = None, math_attention: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the ViT on ``images`` of any size that is a multiple of the patch size.

    Reference ``VisionTransformer.forward`` with ``output_all`` (``transformer.py:636-729``): patch embed,
    CLS, interpolated positional table (spec 1.4), ln_pre, blocks, ln_post over all tokens, then CLS ``@ proj``.

    Args:
        visual: an OpenCLIP ``VisionTransformer`` (checked by :func:`check_vision_tower`).
        images: ``[N, 3, H, W]``.
        fused: run the blocks through :func:`~cosmos.models.blocks.run_blocks` and the patch embedding as
            one matmul (:func:`_patch_embed`); the same math.
        token_rows: None returns every row's patch tokens. An int ``k`` (with ``fused``) returns the tokens of
            the first ``k`` rows only; the others run their last block for the CLS position only
            (:func:`~cosmos.models.blocks.run_blocks_pooled_tail`), which leaves their pooled output unchanged.
        math_attention: with ``fused``, short low-precision CPU attention runs torch's math kernel
            (:func:`~cosmos.models.blocks.attention_kernel`).

    Returns:
        pooled: ``[N, E]``, the unnormalized global image embedding (CLS after ln_post, ``@ visual.proj``).
        tokens: ``[N or k, (H/p) * (W/p), W_v]``, the patch tokens after ln_post, without CLS and before any
            projection.
    """
    x, grid = _patch_embed(visual.conv1, images, fused)  # [N, gh*gw, W_v]
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1)
    pos = interpolate_pos_encoding(visual.positional_embedding, grid, tuple(visual.grid_size))
    x = x + pos.to(x.dtype)
    x = visual.patch_dropout(x)
    x = visual.ln_pre(x)
    if fused and token_rows is not None and token_rows < x.shape[0]:
        head, tail = run_blocks_pooled_tail(visual.transformer, x, token_rows, math_attention)
        head, tail = visual.ln_post(head), visual.ln_post(tail)
        return torch.cat([head[:, 0], tail[:, 0]]) @ visual.proj, head[:, 1:]
    x = run_blocks(visual.transformer, x, False, math_attention) if fused else visual.transformer(x)
    x = visual.ln_post(x)
    pooled, tokens = x[:, 0], x[:, 1:]
    return pooled @ visual.proj, tokens if token_rows is None else tokens[:token_rows]


def _patch_embed(conv: nn.Conv2d, images: torch.Tensor, fused: bool) -> tuple[torch.Tensor, tuple[int, int]]:
    """``[N, 3, H, W] -> [N, gh*gw, W_v]`` patch tokens (row-major) and the grid ``(gh, gw)``.

    ``conv1`` has kernel = stride = p, no padding and no bias, so it is one matmul of the flattened
    ``[3, p, p]`` patches with the ``[W_v, 3*p*p]`` weight; ``fused`` computes it that way (the CPU bf16
    convolution backward is 2-4x slower than the matmul's).
    """
    p = conv.kernel_size[0]
    n, c, h, w = images.shape
    plain = conv.bias is None and conv.stride == conv.kernel_size and conv.padding == (0, 0) and conv.groups == 1
    if not fused or not plain or h % p or w % p or conv.kernel_size[0] != conv.kernel_size[1]:
        x = conv(images)  # [N, W_v, gh, gw]
        return x.flatten(2).transpose(1, 2), (x.shape[-2], x.shape[-1])
    gh, gw = h // p, w // p
    patches = images.reshape(n, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(n, gh * gw, c * p * p)
    return F.linear(patches, conv.weight.reshape(conv.out_channels, -1)), (gh, gw)


def text_forward(clip: nn.Module, text: torch.Tensor, token_rows: int | None = None,
                 fused: bool = False, math_attention: bool = False,
                 text_ends: torch.Tensor | Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the text transformer held by an OpenCLIP ``CLIP`` and return pooled and per-position outputs.

    Reference ``encode_text`` with ``output_all`` (``model.py:314-329``, ``transformer.py:772-775``).

    Args:
        clip: the model holding ``token_embedding``, ``positional_embedding``, ``transformer``, ``ln_final``,
            ``text_projection`` and the causal ``attn_mask``.
        text: ``[M, L]`` token ids, where L must equal the model's ``context_length``.
        token_rows: None computes every row over all L positions and returns all their tokens. An int ``k``
            returns the tokens of the first ``k`` rows only (all L positions); the other rows are cut after
            their EOT (argmax pooling only) and run in up to two length buckets (:func:`trim_buckets`).
        fused: run the blocks through :func:`~cosmos.models.blocks.run_blocks` (same math).
        math_attention: see :func:`vision_forward`.
        text_ends: ``argmax(text, -1) + 1`` of every row, ``[M]``, on the host: a CPU integer tensor or a
            sequence of ints (a list passes through ``DistributedDataParallel``, which copies tensor arguments
            to the device). Given, the trimmed rows' bucket lengths are read from it instead of from ``text``,
            which on an accelerator costs a device-to-host sync mid-forward. The outputs are the same. It is
            checked against ``text`` only when ``text`` is on the CPU (elsewhere the check would be that sync).

    Returns:
        pooled: ``[M, E]``, the unnormalized EOT (argmax id) output after ln_final, ``@ text_projection``.
        tokens: ``[M or k, L, W_t]``, all L positions after ln_final. SOT, EOT and zero-padding positions are
            all included, because the reference cross-attention has no padding mask.
    """
    if text.ndim != 2 or text.shape[1] != clip.context_length:
        raise ValueError(f"text must be [M, {clip.context_length}] token ids, got {tuple(text.shape)}")
    if text_ends is not None:
        text_ends = _host_ends(text_ends, text)
    if token_rows is None or clip.text_pool_type != "argmax" or clip.attn_mask is None or token_rows >= len(text):
        pooled, tokens = _text_rows(clip, text, fused, math_attention)
        return pooled, tokens if token_rows is None else tokens[:token_rows]
    # One embedding lookup for all rows: a lookup per bucket would give the [vocab, W] table one dense
    # gradient per bucket to zero-fill and sum in backward.
    embedded = clip.token_embedding(text)
    head = text[:token_rows]
    pooled, tokens = (_text_rows(clip, head, fused, math_attention, embedded[:token_rows]) if token_rows
                      else (head.new_empty(0), None))
    rest, rest_embedded = text[token_rows:], embedded[token_rows:]
    if text_ends is None:
        ends = (rest.argmax(dim=-1) + 1).tolist()  # one host sync: the bucket lengths are shapes
    else:
        ends = text_ends[token_rows:]
    order, parts = [], []
    for rows, length in trim_buckets(ends):
        index = _to_device(rows, text.device)
        parts.append(_text_rows(clip, rest.index_select(0, index)[:, :length], fused, math_attention,
                                rest_embedded.index_select(0, index)[:, :length])[0])
        order += rows
    inverse = [0] * len(order)  # the bucketed rows back in input order
    for position, row in enumerate(order):
        inverse[row] = position
    pooled_rest = torch.cat(parts).index_select(0, _to_device(inverse, text.device))
    if tokens is None:
        return pooled_rest, pooled_rest.new_empty(0, text.shape[1], clip.transformer.width)
    return torch.cat([pooled, pooled_rest]), tokens


def _to_device(index: list[int], device: torch.device) -> torch.Tensor:
    """A LongTensor of ``index`` on ``device``. ``torch.tensor(..., device=cuda)`` would copy synchronously, which
    waits for the stream (a host sync); a non-blocking copy from pageable memory is staged at once, no wait."""
    return torch.tensor(index, dtype=torch.long).to(device, non_blocking=True)


def _host_ends(text_ends: torch.Tensor | Sequence[int], text: torch.Tensor) -> list[int]:
    """``text_ends`` as a list of ``M`` ints in ``[1, L]``; fail loudly on anything else (see :func:`text_forward`)."""
    if isinstance(text_ends, torch.Tensor):
        if text_ends.device.type != "cpu":
            raise ValueError(
                f"text_ends must be on the host, got a tensor on {text_ends.device} (reading it back is the sync it "
                "exists to avoid). DistributedDataParallel copies tensor arguments to the device: pass "
                "text_ends.tolist() through it")
        if text_ends.ndim != 1 or text_ends.is_floating_point() or text_ends.is_complex():
            raise ValueError(f"text_ends must be a 1-D integer tensor, got {text_ends.dtype} {tuple(text_ends.shape)}")
        text_ends = text_ends.tolist()
    ends = [int(e) for e in text_ends]
    m, length = text.shape
    if len(ends) != m:
        raise ValueError(f"text_ends has {len(ends)} entries for {m} caption rows")
    if ends and not 1 <= min(ends) <= max(ends) <= length:
        raise ValueError(f"text_ends must lie in [1, {length}] (argmax + 1), got [{min(ends)}, {max(ends)}]")
    if text.device.type == "cpu" and ends != (text.argmax(dim=-1) + 1).tolist():
        raise ValueError("text_ends is not argmax(text, -1) + 1 row for row (the EOT ends of these captions)")
    return ends


def trim_buckets(ends: list[int]) -> list[tuple[list[int], int]]:
    """Split rows with EOT ends ``ends`` (1-based) into <= 2 buckets ``(row indices, length)``.

    The split point minimises the padded positions ``sum(len(rows) * length)`` over splits of the rows
    sorted by length; a bucket's length is its longest row's.
    """
    if not ends:
        return []
    order = sorted(range(len(ends)), key=ends.__getitem__)
    lengths = [ends[i] for i in order]
    n, longest = len(order), lengths[-1]
    # On a tie the larger split wins: one bucket (split == n) is one forward fewer.
    _, split = min((s * lengths[s - 1] + (n - s) * longest, -s) for s in range(1, n + 1))
    split = -split
    buckets = [(order[:split], lengths[split - 1])]
    if split < n:
        buckets.append((order[split:], longest))
    return buckets


def _text_rows(clip: nn.Module, text: torch.Tensor, fused: bool, math_attention: bool,
               embedded: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled ``[M, E]`` and tokens ``[M, L', W_t]`` of ``text [M, L']`` (``L' <= context_length``).

    ``embedded``: ``token_embedding(text)`` if the caller already looked it up.
    """
    cast_dtype = clip.transformer.get_cast_dtype()
    length = text.shape[1]
    embedded = clip.token_embedding(text) if embedded is None else embedded
    x = embedded.to(cast_dtype) + clip.positional_embedding[:length].to(cast_dtype)
    if fused:
        x = run_blocks(clip.transformer, x, clip.attn_mask is not None, math_attention)
    else:
        mask = clip.attn_mask[:length, :length] if clip.attn_mask is not None else None
        x = clip.transformer(x, attn_mask=mask)
    tokens = clip.ln_final(x)
    pooled = text_global_pool(tokens, text, clip.text_pool_type, eos_token_id=getattr(clip, "text_eos_id", None))
    proj = clip.text_projection
    if isinstance(proj, nn.Linear):
        pooled = proj(pooled)
    elif proj is not None:
        pooled = pooled @ proj
    return pooled, tokens
