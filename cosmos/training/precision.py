"""Mixed precision: ``fp32``, ``bf16`` (autocast, CPU or GPU) or ``fp16`` (autocast + GradScaler, GPU only).

The reference trains with ``--precision amp`` (fp16 autocast and a GradScaler). On CPU we default to
bf16, which needs no loss scaling; fp16 on CPU is refused rather than silently run in fp32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

__all__ = ["PRECISIONS", "Precision"]

PRECISIONS = ("fp32", "bf16", "fp16")


class Precision:
    """The autocast context and the (possibly disabled) GradScaler for one run."""

    def __init__(self, name: str, device: torch.device):
        if name not in PRECISIONS:
            raise ValueError(f"train.precision={name!r} must be one of {list(PRECISIONS)}")
        if name == "fp16" and device.type != "cuda":
            raise ValueError(
                f"train.precision=fp16 needs a CUDA device (GradScaler), but the device is {device.type}: "
                "use train.precision=bf16 or fp32 on CPU"
            )
        self.name, self.device = name, device
        self.scaler = torch.amp.GradScaler("cuda", enabled=name == "fp16")

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.name == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.name == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> Callable[[], None]:
        """A closure doing ``optimizer.step()`` through the scaler (for ``step_with_ema``)."""
        def _step() -> None:
            self.scaler.step(optimizer)
            self.scaler.update()
        return _step

    def state_dict(self) -> dict | None:
        return self.scaler.state_dict() if self.scaler.is_enabled() else None

    def load_state_dict(self, state: dict | None) -> None:
        if state is not None and self.scaler.is_enabled():
            self.scaler.load_state_dict(state)
