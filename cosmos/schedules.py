"""Per-step schedules as arrays indexed by global step (reference section 6; DINO ``cosine_scheduler``).

Schedules are data: the training loop reads ``schedule[step]``, logs it and stores the array in the
checkpoint, so a resumed run continues on exactly the same values.
"""

from __future__ import annotations

import numpy as np


def cosine_lr(base_lr: float, warmup_steps: int, total_steps: int) -> np.ndarray:
    """Linear warm-up then cosine decay to 0, shape ``[total_steps]`` (reference ``scheduler.py:43-53``).

    ``lr[s] = base * (s + 1) / warmup`` for ``s < warmup``, else
    ``lr[s] = 1/2 (1 + cos(pi (s - warmup) / (T - warmup))) * base``.
    """
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"need 0 <= warmup_steps < total_steps, got {warmup_steps} and {total_steps}")
    steps = np.arange(total_steps, dtype=np.float64)
    warm = base_lr * (steps + 1) / max(warmup_steps, 1)
    decay = 0.5 * (1 + np.cos(np.pi * (steps - warmup_steps) / (total_steps - warmup_steps))) * base_lr
    return np.where(steps < warmup_steps, warm, decay)


def cosine_momentum(base_momentum: float, total_steps: int) -> np.ndarray:
    """EMA momentum rising from ``m0`` to 1 over ``[total_steps]``: ``m[s] = 1 + 1/2 (1 + cos(pi s / T)) (m0 - 1)``.

    Equals the reference ``cosine_scheduler(m0, 1, warmup=0, total_steps)`` (``scheduler.py:56-65``), used
    when ``--fix-momentum`` is off; note ``m[T-1]`` is just below 1, never 1 itself.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    steps = np.arange(total_steps, dtype=np.float64)
    return 1.0 + 0.5 * (1 + np.cos(np.pi * steps / total_steps)) * (base_momentum - 1.0)


def constant(value: float, total_steps: int) -> np.ndarray:
    """``value`` at every step, shape ``[total_steps]`` (reference ``--fix-momentum`` in all train scripts)."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    return np.full(total_steps, value, dtype=np.float64)
