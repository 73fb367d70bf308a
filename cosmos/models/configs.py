"""Named model architectures: OpenCLIP's own configs (``ViT-B-16``, ``ViT-B-32``, ...) plus small CPU configs.

A config is an OpenCLIP-style dict: ``embed_dim``, ``vision_cfg`` and ``text_cfg``, optionally ``quick_gelu``.
The reference runs use the OpenCLIP ``ViT-B-16`` and ``ViT-B-32`` configs unchanged (spec 2.2). The
``cosmos-*`` configs exist only so that tests, smoke runs and debugging fit on a laptop CPU:

- ``cosmos-tiny``: 32-px images with patch 4 (an 8x8 grid; 16-px local crops give 4x4), a 4-layer width-128
  ViT with 4 heads of 32, and a 3-layer width-128 text transformer over 24 tokens, E = 128.
- ``cosmos-small``: 64-px images with patch 8, a 6-layer width-192 ViT with 6 heads of 32, and a 4-layer
  width-192 text transformer over 32 tokens, E = 192.

Both keep the real 49,408-token CLIP vocabulary, so the real tokenizer works with them (truncated to
their context length).
"""

from __future__ import annotations

import copy
from typing import Any

import open_clip

__all__ = ["COSMOS_MODEL_CONFIGS", "get_model_config", "list_model_names", "merge_overrides"]

COSMOS_MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    "cosmos-tiny": {
        "embed_dim": 128,
        "vision_cfg": {"image_size": 32, "patch_size": 4, "width": 128, "layers": 4, "head_width": 32},
        "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 3},
    },
    "cosmos-small": {
        "embed_dim": 192,
        "vision_cfg": {"image_size": 64, "patch_size": 8, "width": 192, "layers": 6, "head_width": 32},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 192, "heads": 4, "layers": 4},
    },
}


def list_model_names() -> list[str]:
    """Our ``cosmos-*`` names followed by every OpenCLIP config name."""
    return sorted(COSMOS_MODEL_CONFIGS) + list(open_clip.list_models())


def get_model_config(name: str) -> dict[str, Any]:
    """A deep copy of the named config (ours first, then OpenCLIP's). Unknown names raise ``KeyError``."""
    if name in COSMOS_MODEL_CONFIGS:
        return copy.deepcopy(COSMOS_MODEL_CONFIGS[name])
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise KeyError(
            f"unknown model {name!r}: not one of {sorted(COSMOS_MODEL_CONFIGS)} and not an OpenCLIP config "
            "(see open_clip.list_models())"
        )
    return copy.deepcopy(cfg)


def merge_overrides(cfg: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return ``cfg`` with ``overrides`` applied. ``vision_cfg`` and ``text_cfg`` dicts update key by key.

    Example: ``merge_overrides(cfg, {"text_cfg": {"context_length": 16}, "embed_dim": 64})``.
    """
    merged = copy.deepcopy(cfg)
    for key, value in overrides.items():
        if key in ("vision_cfg", "text_cfg") and isinstance(value, dict):
            merged[key] = {**merged.get(key, {}), **value}
        else:
            merged[key] = value
    return merged
