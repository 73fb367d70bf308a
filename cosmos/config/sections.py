"""Key checks shared by every typed view of a params section: the one place that names odd keys."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


def check_keys(cls: type, section: Mapping[str, Any], prefix: str, require_all: bool = True) -> None:
    """Raise ``ValueError`` naming ``prefix`` and the keys of ``section`` that are not fields of dataclass
    ``cls`` (and, with ``require_all``, the fields it lacks)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown, missing = sorted(set(section) - known), sorted(known - set(section))
    if unknown:
        raise ValueError(f"{prefix}: unknown key(s) {unknown}; known keys: {sorted(known)}")
    if require_all and missing:
        raise ValueError(f"{prefix}: missing key(s) {missing} (every {prefix} config defines every key)")
