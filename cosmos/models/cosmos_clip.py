"""COSMOS model: OpenCLIP ``CLIP`` plus token mappings, two cross-attention modules and a distillation temperature.

Reference spec sections 1 and 2.2 (``model.py:270-437`` and ``transformer.py:539-548`` of the COSMOS fork). The
three CLI flags the reference needs (``--output-all --attentional-pool --cosmos``) are always on here.

Parameters added on top of OpenCLIP, all under the reference's exact names:

- ``image_token_mapping``: ``Linear(W_v, E)``. ViT patch tokens after ln_post -> cross-attention K/V.
- ``text_token_mapping``: ``Linear(W_t, E)``. Text outputs after ln_final -> cross-attention K/V.
- ``visual.attn_cross_pool``: C^I, a text query over image tokens; it gives the text's cross-modal embedding.
- ``text_attn_cross_pool``: C^T, an image query over text tokens; it gives the image's cross-modal embedding.
- ``distill_logit_scale``: a scalar init ln(1/0.07); the temperature used only by the distillation loss.

Design choice, ``cross_attn=False``: the parameters stay, and only the cross-modal computation is skipped. So
every variant has the same 323-key state dict (for ViT-B), checkpoints and EMA stay interchangeable, and the
ablation removes the computation only. The unused parameters get no gradient, so the DDP wrapper must set
``find_unused_parameters=True`` (or freeze them) for that ablation.

Parameter order: ``named_parameters()`` follows reference 2.2 exactly. ``distill_logit_scale`` comes right
after ``logit_scale``, ``visual.attn_cross_pool`` sits between ``visual.transformer`` and ``visual.ln_post``,
and ``text_attn_cross_pool``, ``image_token_mapping`` and ``text_token_mapping`` come last. The init values
are not bit-identical to the reference under the same seed, because the reference creates
``visual.attn_cross_pool`` inside the ViT constructor and so draws random numbers in a different order.
The distributions are the same (PyTorch defaults, spec 1.4).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from open_clip.model import CLIP

from cosmos.models.blocks import attention_kernel, check_fusable
from cosmos.models.crossmodal import AttentionalCrossPooler
from cosmos.models.towers import check_vision_tower, text_forward, vision_forward

__all__ = ["CosmosCLIP", "Images"]

Images = torch.Tensor | Sequence[torch.Tensor]
_CLIP_KWARGS = ("embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "init_logit_scale")


class CosmosCLIP(CLIP):
    """OpenCLIP ``CLIP`` with the COSMOS cross-modal branch (spec 1.2) and multi-crop input.

    Args:
        embed_dim: joint embedding width E (512 for ViT-B).
        vision_cfg / text_cfg: OpenCLIP tower configs (dicts or ``CLIPVisionCfg`` / ``CLIPTextCfg``). Only
            plain CLS-pooled ViTs and the standard text transformer are supported.
        quick_gelu: OpenCLIP activation switch (False for the reference ViT-B configs).
        cross_attn: run the cross-modal branch in student forwards. See the module docstring for ``False``.
        cross_attn_heads: heads of both cross-attention modules. The reference fixes 8.
        init_logit_scale / init_distill_logit_scale: both ln(1/0.07) in the reference.
        cast_dtype: OpenCLIP cast dtype (fp32 LayerNorms under low precision).
        fused_blocks: run both transformer stacks through :func:`cosmos.models.blocks.run_blocks` (exact).
        trim_text: cut caption rows after their EOT where only their pooled embedding is read (exact; see
            :func:`cosmos.models.towers.text_forward`).
        trim_vision: crops whose patch tokens are not read run their last ViT block for the CLS token only
            (exact, needs ``fused_blocks``; see :func:`cosmos.models.towers.vision_forward`).
        shared_cross_kv: the cross-attention projects each sample's keys and values once for all its views
            (exact; the reference tiles the tokens per view, see :meth:`_cross_modal`).
        math_attention: on CPU under bf16/fp16, attention over at most 128 keys runs torch's math SDPA kernel
            instead of the flash kernel (both compute scores and softmax in fp32; the math kernel's backward
            is several times faster at these lengths; :func:`cosmos.models.blocks.attention_kernel`).
    """

    def __init__(
        self,
        embed_dim: int,
        vision_cfg: Any,
        text_cfg: Any,
        quick_gelu: bool = False,
        cross_attn: bool = True,
        cross_attn_heads: int = 8,
        init_logit_scale: float = math.log(1 / 0.07),
        init_distill_logit_scale: float = math.log(1 / 0.07),
        cast_dtype: torch.dtype | None = None,
        fused_blocks: bool = True,
        trim_text: bool = True,
        trim_vision: bool = True,
        shared_cross_kv: bool = True,
        math_attention: bool = True,
    ):
        super().__init__(
            embed_dim, vision_cfg, text_cfg, quick_gelu=quick_gelu,
            init_logit_scale=init_logit_scale, cast_dtype=cast_dtype, output_dict=True,
        )
        check_vision_tower(self.visual)
        if fused_blocks:
            check_fusable(self.visual.transformer)
            check_fusable(self.transformer)
            _check_causal(self.attn_mask)
        self.fused_blocks, self.trim_text = fused_blocks, trim_text
        self.trim_vision, self.shared_cross_kv = trim_vision and fused_blocks, shared_cross_kv
        self.math_attention = math_attention
        self.cross_attn = cross_attn
        self.embed_dim = embed_dim
        self.distill_logit_scale = nn.Parameter(torch.ones([]) * init_distill_logit_scale)

        # Re-register ln_post after the new pooler so the visual parameter order matches the reference ViT,
        # which creates attn_cross_pool before ln_post (zip-based EMA and optimizer-state loading need it).
        ln_post = self.visual._modules.pop("ln_post")
        self.visual.attn_cross_pool = AttentionalCrossPooler(embed_dim, embed_dim, cross_attn_heads)
        self.visual.ln_post = ln_post

        self.text_attn_cross_pool = AttentionalCrossPooler(embed_dim, embed_dim, cross_attn_heads)
        self.image_token_mapping = nn.Linear(self.visual.conv1.out_channels, embed_dim)
        self.text_token_mapping = nn.Linear(self.transformer.width, embed_dim)

    @classmethod
    def from_config(cls, cfg: dict[str, Any], **kwargs: Any) -> "CosmosCLIP":
        """Build from an OpenCLIP-style model config dict (``embed_dim``, ``vision_cfg``, ``text_cfg``, ...)."""
        unsupported = sorted(k for k, v in cfg.items() if k not in _CLIP_KWARGS and v)
        if unsupported:
            raise ValueError(f"model config keys not supported by CosmosCLIP: {unsupported}")
        return cls(**{k: v for k, v in cfg.items() if k in _CLIP_KWARGS}, **kwargs)

    # ----------------------------------------------------------------------------------------- encoders

    def _vision(self, images: torch.Tensor, token_rows: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        return vision_forward(self.visual, images, fused=self.fused_blocks,
                              token_rows=token_rows if self.trim_vision else None, math_attention=self.math_attention)

    def _encode_image_groups(self, images: Images, token_rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One ViT pass per run of same-size crops (reference ``MultiCropWrap``, ``model.py:412-437``).

        Returns the unnormalized pooled features ``[sum N_i, E]`` in input (crop-major) order, and the raw patch
        tokens ``[N_1, P_1, W_v]`` of the first resolution group only, which is all the reference keeps.
        ``token_rows``: how many leading rows of that group need their tokens (None: all; ``trim_vision``).
        """
        if isinstance(images, torch.Tensor):
            _check_float_images([images])
            return self._vision(images, token_rows)
        if len(images) == 0:
            raise ValueError("images is an empty list")
        _check_float_images(images)
        groups: list[list[torch.Tensor]] = [[images[0]]]
        for img in images[1:]:
            if img.shape[-2:] == groups[-1][-1].shape[-2:]:
                groups[-1].append(img)
            else:
                groups.append([img])
        pooled, first_tokens = [], None
        for i, group in enumerate(groups):
            feats, tokens = self._vision(torch.cat(group, dim=0), token_rows if i == 0 else 0)
            pooled.append(feats)
            first_tokens = tokens if first_tokens is None else first_tokens
        return torch.cat(pooled, dim=0), first_tokens

    def encode_image(self, images: Images, normalize: bool = True) -> torch.Tensor:
        """Global image embeddings ``[N, E]`` of a batch ``[N, 3, H, W]`` or a crop list (crop-major)."""
        feats, _ = self._encode_image_groups(images, token_rows=0)
        return F.normalize(feats, dim=-1) if normalize else feats

    def encode_text(self, texts: torch.Tensor, normalize: bool = True,
                    text_ends: torch.Tensor | Sequence[int] | None = None) -> torch.Tensor:
        """Global text embeddings ``[M, E]`` of token ids ``[M, context_length]`` (EOT pooled).

        ``text_ends``: the rows' EOT ends ``[M]`` on the host, saving a device sync (see :meth:`forward`).
        """
        feats, _ = self._text(texts, token_rows=0, text_ends=text_ends)
        return F.normalize(feats, dim=-1) if normalize else feats

    def encode_image_dense(self, images: torch.Tensor) -> torch.Tensor:
        """Dense patch features ``[N, (H/p)*(W/p), E]`` for segmentation (spec 2.3).

        These are the patch tokens after ln_post ``@ visual.proj``, not ``image_token_mapping``, in row-major
        grid order, unnormalized. The segmentation code reshapes them to ``[N, H/p, W/p, E]``.
        """
        _, tokens = vision_forward(self.visual, images, fused=self.fused_blocks, math_attention=self.math_attention)
        return tokens @ self.visual.proj

    def _text(self, texts: torch.Tensor, token_rows: int | None,
              text_ends: torch.Tensor | Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return text_forward(self, texts, token_rows=token_rows if self.trim_text else None,
                            fused=self.fused_blocks, math_attention=self.math_attention, text_ends=text_ends)

    # ------------------------------------------------------------------------------------------ forward

    def _cross_modal(
        self, img_feat: torch.Tensor, txt_feat: torch.Tensor, img_tok: torch.Tensor, txt_tok: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Spec 1.2: h_I = norm(f_I + C^T(f_I; txt_tok)), h_T = norm(f_T + C^I(f_T; img_tok)).

        ``img_feat [N, E]``/``txt_feat [M, E]`` are unnormalized and view-major. ``img_tok [B, P, E]`` and
        ``txt_tok [B, L, E]`` come from g1 and G1 only; row ``v*B + i`` of every view attends over sample i's
        tokens. The reference tiles the tokens per view (``[V*B, L, E]``, one query each), which projects the
        same keys and values V times; ``shared_cross_kv`` instead gives sample i its V view rows as V queries
        over one copy of its tokens (``[B, V, E]`` queries, ``[B, L, E]`` keys): the same softmax per row.
        """
        with attention_kernel(img_feat, txt_tok.shape[1], self.math_attention):
            img_att = self._attend(self.text_attn_cross_pool, img_feat, txt_tok)
        with attention_kernel(txt_feat, img_tok.shape[1], self.math_attention):
            txt_att = self._attend(self.visual.attn_cross_pool, txt_feat, img_tok)
        return F.normalize(img_feat + img_att, dim=-1), F.normalize(txt_feat + txt_att, dim=-1)

    def _attend(self, pooler: AttentionalCrossPooler, feats: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``feats [V*B, E]`` (view-major) attend over their sample's ``tokens [B, L, E]`` -> ``[V*B, E]``."""
        b = tokens.shape[0]
        if not self.shared_cross_kv:
            return pooler(feats, _tile(tokens, feats.shape[0] // b)).squeeze(1)
        queries = feats.view(-1, b, feats.shape[-1]).transpose(0, 1)  # [B, V, E]
        return pooler(queries, tokens).transpose(0, 1).reshape(feats.shape)

    def forward(
        self,
        images: Images,
        texts: torch.Tensor,
        batch_size: int | None = None,
        return_tokens: bool = False,
        text_ends: torch.Tensor | Sequence[int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """COSMOS forward (reference ``CLIP.forward``, ``model.py:340-404``).

        Args:
            images: ``[N, 3, H, W]``, or crops ``[g1, g2, l1, ..]`` each ``[B, 3, h, w]``. Runs of equal size
                share one ViT pass.
            texts: ``[M, context_length]`` caption-major ids ``[G1(B), G2(B), L1(B), ..]``.
            batch_size: B. Pass it for the student in training; it enables the cross-modal branch. Leave it
                None for the teacher and for evaluation.
            return_tokens: also return ``image_tokens [N_1, P, E]`` (mapped tokens of the first resolution
                group) and ``text_tokens [M, L, E]`` (mapped, padding positions included).
            text_ends: ``argmax(texts, -1) + 1`` per row, ``[M]``, on the host (the batch's ``text_ends``,
                :func:`cosmos.method.collate`): a CPU integer tensor, or a list of ints through DDP, which
                copies tensor arguments to the device. ``trim_text`` then reads its bucket lengths from it instead
                of syncing with the device (:func:`cosmos.models.towers.text_forward`); the outputs are the same.

        Returns:
            ``image_features [N, E]`` and ``text_features [M, E]`` (L2-normalized), ``logit_scale`` and
            ``distill_logit_scale`` (both ``exp``-ed scalars), plus ``img_crossmodal_features [N, E]`` and
            ``txt_crossmodal_features [M, E]`` (L2-normalized) when ``batch_size`` is given and
            ``cross_attn`` is on, and ``dino_logits [N, K]`` (the attached SiLC head on every view of
            ``image_features``) when ``batch_size`` is given and the model carries a ``dino_head``.
        """
        student_cross = batch_size is not None and self.cross_attn
        if batch_size is not None:
            _check_batch(images, texts, batch_size)
        # Tokens are read for g1 / G1 only (cross branch) or for every row (return_tokens).
        token_rows = None if return_tokens else (batch_size if student_cross else 0)
        img_feat, img_raw_tok = self._encode_image_groups(images, token_rows)
        txt_feat, txt_raw_tok = self._text(texts, token_rows, text_ends)

        out: dict[str, torch.Tensor] = {}
        if student_cross:
            # Reference: K/V from the first global crop and first global caption only (spec 10, item 2).
            img_tok = self.image_token_mapping(img_raw_tok[:batch_size])
            txt_tok = self.text_token_mapping(txt_raw_tok[:batch_size])
            out["img_crossmodal_features"], out["txt_crossmodal_features"] = self._cross_modal(
                img_feat, txt_feat, img_tok, txt_tok
            )
        out["image_features"] = F.normalize(img_feat, dim=-1)
        out["text_features"] = F.normalize(txt_feat, dim=-1)
        out["logit_scale"] = self.logit_scale.exp()
        out["distill_logit_scale"] = self.distill_logit_scale.exp()
        head = getattr(self, "dino_head", None)
        if head is not None and batch_size is not None:
            # SiLC's DINO head (attached by cosmos.method.build_student) runs here, inside the forward that DDP
            # wraps: called from outside, its parameters would be marked ready twice in backward. One call per
            # view, as the loss reads them.
            out["dino_logits"] = torch.cat([head(view) for view in out["image_features"].split(batch_size)])
        if return_tokens:
            out["image_tokens"] = self.image_token_mapping(img_raw_tok)
            out["text_tokens"] = self.text_token_mapping(txt_raw_tok)
        return out


def _check_causal(mask: torch.Tensor | None) -> None:
    """``fused_blocks`` stands for the text mask by ``is_causal``: it must be OpenCLIP's causal mask (or None)."""
    if mask is None or mask.is_meta:  # a meta-device build has no values to check; a real one is checked
        return
    causal = torch.full_like(mask, float("-inf")).triu_(1)
    if not torch.equal(mask, causal):
        raise NotImplementedError("the text attn_mask is not the causal -inf mask; set model.fused_blocks=false")


def _check_float_images(images: Sequence[torch.Tensor]) -> None:
    """uint8 crops are pixels, not model input: without this the first convolution fails on a dtype mismatch."""
    if any(img.dtype == torch.uint8 for img in images):
        raise TypeError("images are uint8 pixels: normalize them first (cosmos.training.data.batch_to, or "
                        "cosmos.training.device_batch.normalize_images)")


def _tile(tokens: torch.Tensor, n_views: int) -> torch.Tensor:
    """``[B, L, D]`` -> ``[n_views*B, L, D]``, view-major (the reference ``rep``)."""
    return tokens.repeat(n_views, 1, 1)


def _check_batch(images: Images, texts: torch.Tensor, batch_size: int) -> None:
    """Assert every view holds ``batch_size`` samples, so view-major tiling lines samples up."""
    crops = [images] if isinstance(images, torch.Tensor) else list(images)
    n_images = sum(c.shape[0] for c in crops)
    bad_crop = not isinstance(images, torch.Tensor) and any(c.shape[0] != batch_size for c in crops)
    if bad_crop or n_images % batch_size or texts.shape[0] % batch_size:
        raise ValueError(
            f"batch_size={batch_size} does not divide the views: crop sizes "
            f"{[c.shape[0] for c in crops]}, {texts.shape[0]} captions"
        )
