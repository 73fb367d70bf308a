"""Where evaluation models come from: our checkpoints, released COSMOS files, or OpenCLIP weights.

Three sources, each giving one :class:`EvalModel` per weight set:

- ``checkpoint``: a ``.pt`` in the reference layout (spec 2.1) or a folder of them, as the ``pretrain``
  stage writes (``final.pt``, else the newest ``step-*.pt``). Student and/or teacher.
- ``cosmos_release``: a released ``sankim2/cosmos`` file. A local path is used as it is; a bare file name
  that is not on disk is fetched with ``huggingface_hub.hf_hub_download`` (offline or not installed: a
  clear error). It has the same layout, so it loads exactly like ``checkpoint``; the student's ``module.``
  prefix is stripped.
- ``openclip``: ``open_clip.create_model_and_transforms(name, pretrained=tag_or_path)``. One weight set,
  labelled ``openclip``. A COSMOS file passed here is refused (spec 2.1 pitfall: open_clip would look for
  ``state_dict``), so it cannot silently evaluate random weights.

Every load is strict; a mismatch raises :class:`~cosmos.models.CheckpointError` naming the missing and
unexpected keys. Weights are loaded on the CPU, then the model moves to the evaluation device
(:mod:`cosmos.eval.device`), which :class:`EvalModel` carries for the evaluators.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from cosmos.augment.multicrop import eval_transform
from cosmos.io.hub import describe_hub_error, hub_error_hint
from cosmos.models import CheckpointError, build_model, load_checkpoint_file, load_cosmos_weights
from cosmos.models.configs import COSMOS_MODEL_CONFIGS
from cosmos.text.tokenizer import build_tokenizer

__all__ = ["EvalModel", "WEIGHT_CHOICES", "load_eval_models", "resolve_checkpoint", "fetch_release"]

WEIGHT_CHOICES = ("student", "teacher", "both")
HF_REPO = "sankim2/cosmos"
_STEP = re.compile(r"^step-(\d+)\.pt$")


@dataclass
class EvalModel:
    """A model in eval mode plus what evaluating it needs.

    ``model`` is any OpenCLIP ``CLIP`` (our :class:`~cosmos.models.CosmosCLIP` included): the evaluators use
    only ``encode_image``, ``encode_text``, ``model.visual`` (dense features) and, for pictures, the COSMOS
    cross-attention modules when present.
    """

    label: str                      # "student", "teacher" or "openclip"
    model: nn.Module
    tokenizer: Callable[[list[str]], torch.Tensor]
    image_size: int
    device: torch.device = torch.device("cpu")  # where `model` lives; inputs go there, results come back to CPU

    @property
    def transform(self):
        """Reference eval transform: bicubic short-side resize, center crop, OpenAI normalization."""
        return eval_transform(self.image_size)

    @property
    def is_cosmos(self) -> bool:
        return hasattr(self.model, "text_attn_cross_pool")


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file as given, or in a folder ``final.pt``, else the highest ``step-*.pt``."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {path} does not exist (run the pretrain stage, or set eval.source.path)")
    if (path / "final.pt").is_file():
        return path / "final.pt"
    steps = sorted((int(m.group(1)), p) for p in path.iterdir() if (m := _STEP.match(p.name)))
    if not steps:
        raise FileNotFoundError(f"{path} holds no final.pt or step-*.pt checkpoint")
    return steps[-1][1]


def fetch_release(filename: str, repo: str = HF_REPO, cache_dir: str | None = None) -> Path:
    """A released COSMOS file: the local path if it exists, else ``hf_hub_download(repo, filename)``."""
    if Path(filename).is_file():
        return Path(filename)
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as err:
        raise RuntimeError(
            f"{filename} is not a local file and huggingface_hub is not installed; "
            f"download it from https://huggingface.co/{repo} and pass its path"
        ) from err
    try:
        return Path(hf_hub_download(repo_id=repo, filename=filename, cache_dir=cache_dir))
    except Exception as err:  # offline, unknown file, auth: all end the same way for the user
        raise RuntimeError(
            f"could not fetch {filename} from the Hugging Face repo {repo} ({describe_hub_error(err)}). "
            f"Fix: {hub_error_hint(err)}; on an offline machine download it elsewhere and pass the local path"
        ) from err


def _image_size(model: nn.Module) -> int:
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    return int(size)


def _wanted(weights: str) -> tuple[str, ...]:
    if weights not in WEIGHT_CHOICES:
        raise ValueError(f"eval weights must be one of {WEIGHT_CHOICES}, got {weights!r}")
    return ("student", "teacher") if weights == "both" else (weights,)


def load_cosmos_file(path: str | os.PathLike, *, model_name: str, weights: str = "both",
                     device: torch.device = torch.device("cpu")) -> dict[str, EvalModel]:
    """Student and/or teacher of a reference-layout checkpoint, each in its own :class:`CosmosCLIP`."""
    ckpt = load_checkpoint_file(path)
    if "student" not in ckpt and "teacher" not in ckpt:
        hint = " It looks like an OpenCLIP state dict: use eval.source.kind=openclip." if (
            "state_dict" in ckpt or "positional_embedding" in ckpt) else ""
        raise CheckpointError(f"{path} is not in the COSMOS layout (keys {sorted(ckpt)[:8]}).{hint}")
    ckpt = _drop_training_heads(ckpt)
    out = {}
    for which in _wanted(weights):
        model = build_model(model_name, cross_attn=True)
        try:
            load_cosmos_weights(model, ckpt, which=which)
        except CheckpointError as err:
            raise CheckpointError(f"{path} vs model {model_name!r}: {err}") from err
        model.eval().requires_grad_(False).to(device)
        out[which] = EvalModel(which, model, build_tokenizer(model.context_length), _image_size(model), device)
    return out


# Heads used only by a training objective (SiLC's DINO projection head); evaluation never calls them.
TRAINING_ONLY_PREFIXES = ("dino_head.", "module.dino_head.")


def _drop_training_heads(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint without training-only heads, so a SiLC run loads strictly into the eval model."""
    out = dict(ckpt)
    for which in ("student", "teacher"):
        if isinstance(out.get(which), dict):
            out[which] = {k: v for k, v in out[which].items() if not k.startswith(TRAINING_ONLY_PREFIXES)}
    return out


def _register_cosmos_config(name: str) -> None:
    """Let ``open_clip`` build our CPU configs (``cosmos-tiny``...) as plain CLIP baselines."""
    import open_clip.factory as factory

    if name in COSMOS_MODEL_CONFIGS and name not in factory._MODEL_CONFIGS:
        factory._MODEL_CONFIGS[name] = copy.deepcopy(COSMOS_MODEL_CONFIGS[name])


def load_openclip(model_name: str, pretrained: str | None,
                  device: torch.device = torch.device("cpu")) -> dict[str, EvalModel]:
    """An OpenCLIP model via ``open_clip.create_model_and_transforms`` (pretrained tag or local file)."""
    import open_clip

    if pretrained and Path(pretrained).is_file():
        ckpt = load_checkpoint_file(pretrained)
        if "student" in ckpt or "teacher" in ckpt:
            raise CheckpointError(
                f"{pretrained} is a COSMOS checkpoint; open_clip would not find its weights (spec 2.1). "
                "Use eval.source.kind=cosmos_release (or checkpoint)"
            )
    _register_cosmos_config(model_name)
    try:
        model, _, _ = open_clip.create_model_and_transforms(model_name, pretrained=pretrained or None)
    except RuntimeError as err:  # strict load_state_dict: names the missing / unexpected keys
        raise CheckpointError(f"open_clip could not load {pretrained!r} into {model_name!r}: {err}") from err
    except Exception as err:  # network / unknown tag
        raise RuntimeError(f"open_clip could not create {model_name!r} with pretrained={pretrained!r}: {err}") from err
    model.eval().requires_grad_(False).to(device)
    try:
        tokenizer = open_clip.get_tokenizer(model_name)
    except Exception:  # noqa: BLE001 - HF tokenizers need the network; plain CLIP BPE is the fallback
        tokenizer = build_tokenizer(model.context_length)
    return {"openclip": EvalModel("openclip", model, tokenizer, _image_size(model), device)}


def load_eval_models(source: dict[str, Any], *, model_name: str, weights: str,
                     device: torch.device = torch.device("cpu")) -> dict[str, EvalModel]:
    """The models named by an ``eval.source`` config section.

    Args:
        source: ``{"kind": "checkpoint"|"cosmos_release"|"openclip", "path": str, "hf_repo": str,
            "model": str (optional, overrides model_name), "pretrained": str (openclip only)}``.
        model_name: architecture (``cosmos-tiny``, ``ViT-B-16``...), normally ``model.name``.
        weights: ``student``, ``teacher`` or ``both`` (ignored for ``openclip``).
        device: where the models go (:func:`cosmos.eval.device.resolve_device` of ``eval.device``).

    Returns:
        ``{label: EvalModel}`` in the order student, teacher (or just ``openclip``).
    """
    kind = source.get("kind")
    name = source.get("model") or model_name
    if kind == "checkpoint":
        return load_cosmos_file(resolve_checkpoint(source["path"]), model_name=name, weights=weights, device=device)
    if kind == "cosmos_release":
        path = fetch_release(source["path"], source.get("hf_repo") or HF_REPO)
        return load_cosmos_file(path, model_name=name, weights=weights, device=device)
    if kind == "openclip":
        return load_openclip(name, source.get("pretrained") or source.get("path") or None, device)
    raise ValueError(f"eval.source.kind must be checkpoint, cosmos_release or openclip, got {kind!r}")
