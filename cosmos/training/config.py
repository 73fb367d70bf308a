"""The ``model``, ``optim``, ``train`` and ``launcher`` sections of ``params.yaml`` as typed, validated dataclasses.

Every stage validates its sections before doing any work: an unknown or missing key, a wrong type, or a
batch that does not split over the ranks raises ``ValueError`` naming the key (house style 12).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Mapping

from cosmos.config.sections import check_keys

__all__ = ["LauncherConfig", "ModelConfig", "OptimConfig", "TrainConfig", "typed_section"]


@dataclass(frozen=True)
class ModelConfig:
    """``model``: an architecture name (``cosmos-tiny``, ``cosmos-small``, ``ViT-B-16``, ...) and its speed-up switches.

    ``fused_blocks`` (batch-first SDPA blocks, :mod:`cosmos.models.blocks`), ``trim_text`` (caption rows cut
    after their EOT where only the pooled embedding is read, :func:`cosmos.models.towers.text_forward`),
    ``trim_vision`` (crops whose patch tokens are not read run the last block for CLS only) and
    ``shared_cross_kv`` (cross-attention keys/values projected once per sample, not once per view) compute
    the same function as the stock path; ``math_attention`` picks torch's math SDPA kernel for short
    low-precision CPU attention (a different kernel, as accurate as flash); ``docs/training.md`` gives
    their measured effect. ``grad_checkpointing`` (the reference's ``--grad-checkpointing``) keeps only each
    transformer block's input for backward and recomputes the rest: the same gradients for about a third
    more compute and a fraction of the activation memory (``benchmarks/memory.py``).
    """

    name: str
    fused_blocks: bool = True
    trim_text: bool = True
    trim_vision: bool = True
    shared_cross_kv: bool = True
    math_attention: bool = True
    grad_checkpointing: bool = False  # recompute each transformer block in backward: less memory, same gradients

    def speedups(self) -> dict[str, bool]:
        """The switches as :func:`cosmos.models.build_model` keyword arguments."""
        return {"fused_blocks": self.fused_blocks, "trim_text": self.trim_text,
                "trim_vision": self.trim_vision, "shared_cross_kv": self.shared_cross_kv,
                "math_attention": self.math_attention}


@dataclass(frozen=True)
class OptimConfig:
    """``optim``: AdamW and its per-step lr schedule (reference 6: 5e-4, (0.9, 0.98), 1e-8, wd 0.5, 2000 warmup)."""

    lr: float
    betas: tuple[float, float]
    eps: float
    weight_decay: float
    warmup_steps: int
    fused: bool = True  # torch's single-kernel AdamW (same update rule as the reference's foreach AdamW)


@dataclass(frozen=True)
class TrainConfig:
    """``train``: the run's length, batching, precision, checkpointing and resume policy.

    ``batch_size`` is global (summed over ranks). ``max_steps`` (0 = no limit) stops the run early after
    checkpointing, as if killed: a test and smoke hook. ``resume``: ``auto`` (the newest matching
    checkpoint in the output folder, if any), ``none``, or a checkpoint path.
    """

    batch_size: int
    epochs: int
    num_workers: int
    precision: str
    data_fraction: float
    shuffle_buffer: int
    shuffle_initial: int
    checkpoint_every: int
    keep_checkpoints: int
    log_every: int
    resume: str
    max_steps: int
    device: str
    tune_malloc: bool = True  # keep freed memory in the heap (cosmos.training.runtime): no page faults per step
    val_every: int = 0  # steps between learning-curve points (cosmos.training.validation); 0: no curve
    val_images: int = 200  # images of the curve's retrieval subset
    val_root: str | None = None  # COCO-layout retrieval set of the curve (null: no curve)
    accum_steps: int = 1  # micro-batches per step, exact by gradient caching (cosmos.training.accumulation)
    local_loss: bool = False  # OpenCLIP --local-loss: each rank's [B_local, N] logits only (cosmos.losses.gather)
    gather_with_grad: bool = False  # OpenCLIP --gather-with-grad: a differentiable feature all-gather
    compile: bool = False  # torch.compile the student's and the teacher's forward (cosmos.training.compiled)


@dataclass(frozen=True)
class LauncherConfig:
    """``launcher``: where the training function runs (``local``: in-process; ``submitit_local``/``slurm``)."""

    name: str
    timeout_min: int
    nodes: int
    tasks_per_node: int
    cpus_per_task: int
    gpus_per_node: int
    partition: str
    account: str  # Slurm --account (empty: the user's default)
    qos: str  # Slurm --qos
    constraint: str  # Slurm --constraint, e.g. "a100"
    sbatch_extra: dict  # any other #SBATCH option, e.g. {"mem": "64G", "exclusive": true}


def _check_type(value: Any, hint: Any, key: str) -> Any:
    """Return ``value`` coerced to ``hint`` (lists to tuples, ints to floats) or raise naming ``key``."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ValueError(f"{key}={value!r} must be a list of {len(args)} values")
        return tuple(_check_type(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if hint is dict or origin is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"{key}={value!r} must be a mapping")
        return dict(value)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            try:
                return _check_type(value, arg, key)
            except ValueError:
                continue
        raise ValueError(f"{key}={value!r} has the wrong type (expected {hint})")
    if hint is type(None):
        if value is not None:
            raise ValueError(f"{key}={value!r} must be null")
        return None
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):
        raise ValueError(f"{key}={value!r} must be of type {hint.__name__}, got {type(value).__name__}")
    return value


def typed_section(cls: type, section: Mapping[str, Any] | None, prefix: str):
    """Build dataclass ``cls`` from a params section: exact keys, checked types; errors name ``prefix.key``."""
    if not isinstance(section, Mapping):
        raise ValueError(f"{prefix}: missing section (add `{prefix}` to the defaults list in conf/config.yaml)")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    check_keys(cls, section, prefix)
    return cls(**{k: _check_type(section[k], hints[k], f"{prefix}.{k}") for k in known})


_PRECISIONS = ("fp32", "bf16", "fp16")
_LAUNCHERS = ("local", "submitit_local", "slurm")


def validate_train(train: TrainConfig, optim: OptimConfig, launcher: LauncherConfig) -> None:
    """Value checks across sections; each error names the key and the fix."""
    world = launcher.nodes * launcher.tasks_per_node
    checks = [
        (train.batch_size >= 1, f"train.batch_size={train.batch_size} must be >= 1"),
        (train.batch_size % world == 0, f"train.batch_size={train.batch_size} is not divisible by the world size "
                                        f"{world} (launcher.nodes x launcher.tasks_per_node)"),
        (train.epochs >= 1, f"train.epochs={train.epochs} must be >= 1"),
        (train.num_workers >= 0, f"train.num_workers={train.num_workers} must be >= 0"),
        (train.precision in _PRECISIONS, f"train.precision={train.precision!r} must be one of {list(_PRECISIONS)}"),
        (0.0 < train.data_fraction <= 1.0, f"train.data_fraction={train.data_fraction} must lie in (0, 1]"),
        (train.shuffle_buffer >= 1, f"train.shuffle_buffer={train.shuffle_buffer} must be >= 1"),
        (train.checkpoint_every >= 0, f"train.checkpoint_every={train.checkpoint_every} must be >= 0 (0: per epoch)"),
        (train.keep_checkpoints >= 1, f"train.keep_checkpoints={train.keep_checkpoints} must be >= 1"),
        (train.log_every >= 1, f"train.log_every={train.log_every} must be >= 1"),
        (train.max_steps >= 0, f"train.max_steps={train.max_steps} must be >= 0 (0: no limit)"),
        (train.device in ("auto", "cpu", "cuda"), f"train.device={train.device!r} must be auto, cpu or cuda"),
        (train.val_every >= 0, f"train.val_every={train.val_every} must be >= 0 (0: no learning curve)"),
        (train.val_images >= 2, f"train.val_images={train.val_images} must be >= 2"),
        (train.accum_steps >= 1, f"train.accum_steps={train.accum_steps} must be >= 1 (1: no accumulation)"),
        ((train.batch_size // max(world, 1)) % max(train.accum_steps, 1) == 0,
         f"train.accum_steps={train.accum_steps} must divide the per-rank batch {train.batch_size // world} "
         "(train.batch_size / world size)"),
        (optim.lr > 0, f"optim.lr={optim.lr} must be > 0"),
        (all(0 <= b < 1 for b in optim.betas), f"optim.betas={list(optim.betas)} must lie in [0, 1)"),
        (optim.weight_decay >= 0, f"optim.weight_decay={optim.weight_decay} must be >= 0"),
        (optim.warmup_steps >= 0, f"optim.warmup_steps={optim.warmup_steps} must be >= 0"),
        (launcher.name in _LAUNCHERS, f"launcher.name={launcher.name!r} must be one of {list(_LAUNCHERS)}"),
        (launcher.timeout_min >= 1, f"launcher.timeout_min={launcher.timeout_min} must be an integer >= 1"),
        (world >= 1, f"launcher.nodes x launcher.tasks_per_node = {world} must be >= 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
