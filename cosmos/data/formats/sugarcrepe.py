"""SugarCrepe json format: one file per negative type, `{id: {"filename", "caption", "negative_caption"}}`.

Our synthetic probe covers the three types whose truth is checkable on a rendered scene:
replace-attribute (`replace_att`), replace-object (`replace_obj`) and swap-attribute (`swap_att`).
"""

from __future__ import annotations

import json
from pathlib import Path

from cosmos.io.atomic import atomic_write_json

PROBE_TYPES: tuple[str, ...] = ("replace_att", "replace_obj", "swap_att")


def write_probe(root: str | Path, probe_type: str, records: list[dict[str, str]]) -> Path:
    """Write `<probe_type>.json` with string ids "0", "1", ... in record order."""
    path = Path(root) / f"{probe_type}.json"
    atomic_write_json(path, {str(i): r for i, r in enumerate(records)})
    return path


def read_probe(path: str | Path) -> list[dict[str, str]]:
    """Records of one SugarCrepe file in id order; each must hold filename, caption and negative_caption."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    records = [doc[k] for k in sorted(doc, key=int)]
    for r in records:
        missing = {"filename", "caption", "negative_caption"} - set(r)
        if missing:
            raise ValueError(f"{path}: record {r} lacks {sorted(missing)} (not SugarCrepe format)")
    return records
