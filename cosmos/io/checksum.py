"""File checksums for manifests: every shard and URL-list part records the sha256 of its bytes, so a
consumer can verify a copy without trusting its size or name."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["file_sha256"]

_CHUNK = 1 << 20  # 1 MiB reads keep memory flat on multi-GB shards


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of the file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()
