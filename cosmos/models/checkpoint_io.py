"""Reading and writing checkpoints in the COSMOS reference layout (spec 2.1), safely and strictly.

Reference layout, written by ``main.py:553-571`` of the COSMOS fork::

    {"epoch": int, "name": str, "student": state_dict, "teacher": state_dict,
     "optimizer": AdamW state, "scaler": GradScaler state (amp only)}

- ``student`` keys carry ``module.`` after multi-GPU (DDP) training. ``teacher`` keys never do.
- There is no ``state_dict`` key. ``open_clip``'s ``--pretrained`` loader therefore loads nothing and raises
  nothing (spec 2.1, pitfall). This is why every load here is ``strict=True``, and why a mismatch reports
  the offending keys.
- Files are read with ``weights_only=True``. A checkpoint that needs arbitrary unpickling (an argparse
  ``Namespace``, a custom class) is refused rather than executed.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

__all__ = [
    "CheckpointError",
    "check_state_dict",
    "load_checkpoint_file",
    "strip_module_prefix",
    "load_cosmos_weights",
    "export_reference_checkpoint",
]

_RESERVED_KEYS = ("epoch", "name", "student", "teacher", "optimizer", "scaler")
_SHOW = 10  # how many offending keys an error lists


class CheckpointError(RuntimeError):
    """A checkpoint file or state dict that cannot be loaded safely and exactly."""


def load_checkpoint_file(path: str | os.PathLike) -> dict[str, Any]:
    """Load a ``.pt`` file on CPU with ``weights_only=True`` and return its top-level dict.

    Raises:
        CheckpointError: the file holds pickled objects beyond tensors and containers of primitives, or its
            top level is not a dict.
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refusing to load {path}: it contains non-tensor pickled objects ({_unpickler_detail(err)}). "
            "Unpickling them could run arbitrary code, so the file is refused for "
            "safety. Fix: in a trusted environment, load it once with torch.load(..., weights_only=False) and "
            "re-save only tensors, dicts, lists and primitives (e.g. replace an argparse.Namespace with vars(args))."
        ) from err
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict at the top level, got {type(obj).__name__}")
    return obj


def _unpickler_detail(err: Exception) -> str:
    # torch's message is a page of advice; the one line naming the offending global is what helps.
    # torch <= 2.5 prefixes it "WeightsUnpickler error:"; later releases put it in a paragraph of its own
    # ("Trying to load unsupported GLOBAL posix.system ...") between the advice paragraphs.
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    advice = ("Weights only load failed", "Check the documentation", "Please file an issue")
    detail = next((ln for ln in lines if "WeightsUnpickler error" in ln),
                  next((ln for ln in lines if not ln.startswith(advice)), lines[0] if lines else ""))
    return detail.replace("WeightsUnpickler error: ", "").split(" Please use")[0].rstrip(".")


def strip_module_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str = "module.") -> OrderedDict:
    """Return a copy with a leading ``prefix`` (the DDP wrapper's ``module.``) removed from every key."""
    return OrderedDict((k[len(prefix):] if k.startswith(prefix) else k, v) for k, v in state_dict.items())


def _describe(kind: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW]) + (", ..." if len(keys) > _SHOW else "")
    return f"{len(keys)} {kind} key(s): {shown}"


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "state dict") -> None:
    """Raise :class:`CheckpointError` naming missing, unexpected and shape-mismatched keys, if any."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} (checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)})"
        for k, v in state_dict.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    problems = [
        _describe(kind, keys)
        for kind, keys in (("missing", missing), ("unexpected", unexpected), ("shape-mismatched", mismatched))
        if keys
    ]
    if problems:
        raise CheckpointError(f"{source} does not match {type(model).__name__}: " + "; ".join(problems))


def load_cosmos_weights(
    model: nn.Module,
    ckpt: str | os.PathLike | Mapping[str, Any],
    which: str = "student",
) -> nn.Module:
    """Load ``ckpt[which]`` into ``model`` with ``strict=True``, stripping ``module.`` first.

    Args:
        model: an unwrapped :class:`~cosmos.models.cosmos_clip.CosmosCLIP` (not DDP).
        ckpt: a path, or an already loaded reference-layout dict.
        which: ``"student"`` or ``"teacher"``. Segmentation in the reference evaluates the teacher.

    Returns:
        ``model``, for chaining.
    """
    if which not in ("student", "teacher"):
        raise ValueError(f"which must be 'student' or 'teacher', got {which!r}")
    source = str(ckpt) if isinstance(ckpt, (str, os.PathLike)) else "checkpoint"
    if isinstance(ckpt, (str, os.PathLike)):
        ckpt = load_checkpoint_file(ckpt)
    if which not in ckpt:
        hint = " (an OpenCLIP 'state_dict' checkpoint, not the COSMOS layout)" if "state_dict" in ckpt else ""
        raise CheckpointError(f"{source} has no {which!r} entry{hint}; top-level keys: {sorted(ckpt)}")
    state_dict = strip_module_prefix(ckpt[which])
    check_state_dict(model, state_dict, source=f"{source}[{which!r}]")
    model.load_state_dict(state_dict, strict=True)
    return model


def export_reference_checkpoint(
    path: str | os.PathLike,
    student_state: Mapping[str, torch.Tensor],
    teacher_state: Mapping[str, torch.Tensor],
    epoch: int,
    name: str,
    optimizer_state: Mapping[str, Any] | None = None,
    scaler_state: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a reference-layout checkpoint atomically and return its path.

    The dict is ``{"epoch", "name", "student", "teacher"}``, plus ``"optimizer"`` and ``"scaler"`` when given,
    plus any ``extra`` top-level entries (these must not reuse the reserved keys). State dicts are written as
    passed, so a DDP student keeps its ``module.`` prefix, as in the reference. The bytes go to a temporary
    file in the target directory, which is fsynced and then ``os.replace``-d over ``path``. A crash mid-write
    never leaves a truncated checkpoint under the final name.
    """
    payload: dict[str, Any] = {"epoch": int(epoch), "name": str(name),
                               "student": student_state, "teacher": teacher_state}
    if optimizer_state is not None:
        payload["optimizer"] = optimizer_state
    if scaler_state is not None:
        payload["scaler"] = scaler_state
    clash = sorted(set(extra or {}) & set(_RESERVED_KEYS))
    if clash:
        raise ValueError(f"extra entries may not reuse reserved checkpoint keys: {clash}")
    payload.update(extra or {})

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable on POSIX; some filesystems and platforms refuse directory fds.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
