"""COSMOS models: the OpenCLIP-based student/teacher architecture and its checkpoint I/O.

``build_model(name)`` is the one entry point the rest of the library uses. ``name`` is an OpenCLIP config name
(``"ViT-B-16"``, ``"ViT-B-32"``), one of the CPU configs in :mod:`cosmos.models.configs`
(``"cosmos-tiny"``, ``"cosmos-small"``), or a config dict.
"""

from __future__ import annotations

from typing import Any

from cosmos.models.checkpoint_io import (
    CheckpointError,
    export_reference_checkpoint,
    load_checkpoint_file,
    load_cosmos_weights,
    strip_module_prefix,
)
from cosmos.models.configs import get_model_config, list_model_names, merge_overrides
from cosmos.models.cosmos_clip import CosmosCLIP
from cosmos.models.crossmodal import AttentionalCrossPooler
from cosmos.models.pos_embed import interpolate_pos_encoding

__all__ = [
    "AttentionalCrossPooler",
    "CheckpointError",
    "CosmosCLIP",
    "build_model",
    "export_reference_checkpoint",
    "get_model_config",
    "interpolate_pos_encoding",
    "list_model_names",
    "load_checkpoint_file",
    "load_cosmos_weights",
    "strip_module_prefix",
]


def build_model(
    name_or_cfg: str | dict[str, Any],
    *,
    cross_attn: bool = True,
    cross_attn_heads: int = 8,
    fused_blocks: bool = True,
    trim_text: bool = True,
    trim_vision: bool = True,
    shared_cross_kv: bool = True,
    math_attention: bool = True,
    **overrides: Any,
) -> CosmosCLIP:
    """Build a randomly initialized :class:`CosmosCLIP` (never downloads weights).

    Args:
        name_or_cfg: a config name (see :func:`list_model_names`) or an OpenCLIP-style config dict.
        cross_attn: run the cross-modal branch (the parameters exist either way; see ``cosmos_clip``).
        cross_attn_heads: heads of both cross-attention modules (8 in the reference).
        fused_blocks / trim_text / trim_vision / shared_cross_kv / math_attention: the speed-ups of :class:`CosmosCLIP` (``model.*`` in params.yaml).
        **overrides: config keys to replace. ``vision_cfg=`` and ``text_cfg=`` dicts update key by key.
    """
    cfg = get_model_config(name_or_cfg) if isinstance(name_or_cfg, str) else name_or_cfg
    cfg = merge_overrides(cfg, overrides)
    return CosmosCLIP.from_config(cfg, cross_attn=cross_attn, cross_attn_heads=cross_attn_heads,
                                  fused_blocks=fused_blocks, trim_text=trim_text, trim_vision=trim_vision,
                                  shared_cross_kv=shared_cross_kv, math_attention=math_attention)
