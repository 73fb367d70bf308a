"""The host-to-device step of a training batch: copy, normalize uint8 crops on the device, keep host keys (issue 26).

Crops can leave the DataLoader workers as uint8 pixels ``[B, 3, S, S]`` (``SampleTransform(uint8=True)``): a
quarter of the float32 bytes through the workers' shared memory, the pinned buffers and PCIe. They are
normalized after the copy by :func:`normalize_images`, with torchvision's arithmetic, so the model sees the
same numbers as from the float path:

- ``ToTensor``:  ``x.to(float32).div(255)``;
- ``Normalize``: ``x.sub_(mean[:, None, None]).div_(std[:, None, None])`` with the OpenAI CLIP mean and std
  as float32.

The divisor 255 is a 0-dim tensor on the images' device, not a Python number: CUDA turns division by a host
scalar into multiplication by its reciprocal (up to 1 ulp off), while division by a device tensor is the
correctly rounded division the CPU does. Every step is elementwise and correctly rounded, so the result does not
depend on batching or on the device: on CPU it is bit-identical to ToTensor + Normalize per crop
(``tests/training/test_loader_device.py``).

``text_ends`` (the EOT ends of the caption rows, :func:`cosmos.method.collate`) stays on the host, where the
text tower reads it as bucket shapes (:func:`cosmos.models.towers.text_forward`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cosmos.augment.multicrop import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

__all__ = ["HOST_KEYS", "batch_to", "normalize_images"]

# Batch keys that stay on the host: read as Python numbers, so a device copy would cost a sync to read back.
HOST_KEYS = frozenset({"text_ends"})

_CONSTANTS: dict[torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def _constants(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(255, mean [3,1,1], std [3,1,1])`` as float32 on ``device``, made once per device: building them per
    batch would be three small pageable host-to-device copies every step."""
    if device not in _CONSTANTS:
        _CONSTANTS[device] = (
            torch.tensor(255.0, dtype=torch.float32, device=device),
            torch.tensor(OPENAI_CLIP_MEAN, dtype=torch.float32, device=device).view(-1, 1, 1),
            torch.tensor(OPENAI_CLIP_STD, dtype=torch.float32, device=device).view(-1, 1, 1),
        )
    return _CONSTANTS[device]


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 RGB pixels ``[..., 3, S, S]`` -> float32 normalized crops of the same shape, on the same device.

    ToTensor + Normalize (OpenAI CLIP mean/std) as torchvision computes them; see the module docstring.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize_images takes uint8 pixels, got {images.dtype} (float crops are normalized already)")
    if images.ndim < 3 or images.shape[-3] != 3:
        raise ValueError(f"normalize_images takes RGB pixels [..., 3, S, S], got {tuple(images.shape)}")
    scale, mean, std = _constants(images.device)
    return images.to(torch.float32).div_(scale).sub_(mean).div_(std)


def _maybe_normalize(images: torch.Tensor) -> torch.Tensor:
    return normalize_images(images) if images.dtype == torch.uint8 else images


def batch_to(batch: dict, device: torch.device) -> dict:
    """Move the tensors of a collated batch to ``device``; uint8 ``images`` come out normalized float32.

    ``images`` (a crop-major list of ``[B, 3, S, S]``, or one tensor), ``texts`` and any other tensor (or list of
    tensors) are copied with ``non_blocking=True``: from pinned memory (``TrainLoader(pin_memory=True)``) the copy
    overlaps the host; the normalization is queued after it on the same stream. :data:`HOST_KEYS` and non-tensor
    values (``worker``, ``bad_samples``) are passed through untouched.
    """
    out = {}
    for key, value in batch.items():
        if key in HOST_KEYS:
            out[key] = value
        elif isinstance(value, torch.Tensor):
            out[key] = value.to(device, non_blocking=True)
        elif isinstance(value, Sequence) and value and isinstance(value[0], torch.Tensor):
            out[key] = [v.to(device, non_blocking=True) for v in value]
        else:
            out[key] = value
    images = out.get("images")
    if isinstance(images, torch.Tensor):
        out["images"] = _maybe_normalize(images)
    elif isinstance(images, list):
        out["images"] = [_maybe_normalize(view) for view in images]
    return out
