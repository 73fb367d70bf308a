"""Where evaluation computes: ``eval.device`` (``auto`` | ``cpu`` | ``cuda``) and fp32 on the GPU.

The evaluators keep one contract whatever the device: the model, image batches ``[B, 3, H, W]`` and token
batches ``[B, L]`` go to the device; embeddings, logits and predictions come back to the CPU, where metrics
are computed exactly as before. On the CPU this changes no operation, so metrics stay bit-identical.

On a GPU, evaluation stays float32: TF32 (on by default for cuDNN convolutions, i.e. the ViT's patch
embedding) would round inputs to 10 mantissa bits and move scores by more than the CPU-vs-GPU float noise.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

import torch

__all__ = ["DEVICE_CHOICES", "resolve_device", "full_fp32"]

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """``auto``: the current CUDA device when CUDA is available, else the CPU; ``cuda`` without CUDA raises."""
    if name not in DEVICE_CHOICES:
        raise ValueError(f"eval.device={name!r} must be one of {list(DEVICE_CHOICES)} (auto: CUDA when available)")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
        raise RuntimeError(
            f"eval.device=cuda but {socket.gethostname()} has no usable CUDA device (CUDA_VISIBLE_DEVICES={visible}, "
            f"torch {torch.__version__}, CUDA build {torch.version.cuda}). Fix: eval.device=auto (CUDA when "
            "available) or cpu, or evaluate on a GPU node (launcher=slurm with launcher.gpus_per_node>=1)")
    return torch.device("cuda", torch.cuda.current_device())


@contextlib.contextmanager
def full_fp32() -> Iterator[None]:
    """TF32 off for CUDA matmuls and cuDNN convolutions inside the block (restored after); a no-op on CPUs."""
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
