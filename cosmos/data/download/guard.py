"""What keeps a resumable download correct: one run per source folder, img2dataset stopped when the run is
killed, and never a mix of shards cut from different url lists or with different settings.

img2dataset (`incremental_mode="incremental"`) skips every shard id that has its `NNNNN_stats.json` and
fetches the others from the current url list, with the current settings. Shards of an earlier run are only
valid if that run had the same url list (img2dataset's keys are row positions, shards are cut every
`number_sample_per_shard` rows) and wrote its images the same way. So before img2dataset starts, the
settings that decide a shard's content are recorded in `images/` (:data:`FINGERPRINT`), and a run whose
settings differ from those of the finished shards there is refused, naming what changed.
"""

from __future__ import annotations

import fcntl
import json
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cosmos.io.atomic import atomic_write_text

LOCK = ".lock"  # in <work_dir>/<source>/
# In images/; no `.json` suffix, since img2dataset reads every `*.json` there as `<shard id>_stats.json`.
FINGERPRINT = "cosmos_fingerprint"
# img2dataset arguments that decide which rows go into which shard and how their images are written.
CONTENT_KEYS = ("input_format", "url_col", "save_additional_columns", "output_format", "image_size",
                "resize_mode", "resize_only_if_bigger", "encode_quality", "encode_format",
                "number_sample_per_shard", "extract_exif", "compute_hash")
_SETTING_NAMES = {
    "tables": "the caption tables (data.sources.<name>.files: their names and sizes)",
    "format": "data.sources.<name>.format",
    "columns": "the caption columns (data.sources.<name>.format)",
    "rows_per_part": "data.download.rows_per_part",
    "url_list": "the url list (its parts' sha256: the caption tables' content changed)",
    "number_sample_per_shard": "data.download.samples_per_tar",
    "image_size": "data.download.image_size",
    "resize_mode": "data.download.resize_mode",
    "resize_only_if_bigger": "data.download.resize_only_if_bigger",
    "encode_quality": "data.download.encode_quality",
    "save_additional_columns": "the caption columns (data.sources.<name>.format)",
}


class DownloadError(RuntimeError):
    """img2dataset failed, too many images could not be fetched, or the run cannot safely resume."""


@contextmanager
def exclusive_lock(work: Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `work/.lock` (non-blocking): two downloads into one folder would
    write the same shards."""
    work.mkdir(parents=True, exist_ok=True)
    with open(work / LOCK, "a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DownloadError(
                f"another download is running on {work} (it holds the lock {work / LOCK}); wait for it to "
                "finish or stop it, then run again"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def exit_on_termination() -> Iterator[None]:
    """Turn SIGTERM / SIGHUP into SystemExit(128 + signal) while the block runs, so that its `finally`
    clauses run (img2dataset, in its own process group, is not reached by a signal sent to this process).
    Outside the main thread, where Python cannot install handlers, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _exit) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def settings_fingerprint(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The img2dataset arguments (`kwargs` as passed to it) that decide the content of its shards. The
    full fingerprint adds the url list's identity (`tables`, `format`, `columns`, `rows_per_part`) and
    its parts (`url_list`: file, rows, sha256 of each)."""
    return {k: kwargs[k] for k in CONTENT_KEYS}


def url_parts_fingerprint(parts: list[dict]) -> list[list]:
    return [[p["file"], p["rows"], p["sha256"]] for p in parts]


def check_fingerprint(images_dir: Path, expected: dict[str, Any]) -> None:
    """Refuse to resume into `images_dir` when it holds finished shards (`*_stats.json`) that were made
    with other values of the keys of `expected`, or whose fingerprint is missing."""
    if not any(images_dir.glob("*_stats.json")):
        return
    expected = json.loads(json.dumps(expected))  # the form it has when read back
    restart = f"delete {images_dir} to download this source again from the start"
    path = images_dir / FINGERPRINT
    if not path.exists():
        raise DownloadError(
            f"{images_dir} holds finished shards but no {FINGERPRINT}, so the url list and settings they were "
            f"made with are unknown, and img2dataset would mix them with new ones; {restart}"
        )
    recorded = json.loads(path.read_text())
    changed = []
    for key, value in expected.items():
        if recorded.get(key) != value:
            name = _SETTING_NAMES.get(key, f"img2dataset's {key} (cosmos.data.download.scrape)")
            changed.append(name if key == "url_list" else f"{name}: {recorded.get(key)!r} -> {value!r}")
    if changed:
        raise DownloadError(
            f"{images_dir} holds shards downloaded with other settings: {'; '.join(changed)}. img2dataset "
            "would keep those shards and cut the rest differently, losing and duplicating rows; restore the "
            f"old settings to resume, or {restart}"
        )


def write_fingerprint(images_dir: Path, fp: dict[str, Any]) -> None:
    images_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(images_dir / FINGERPRINT, json.dumps(fp, indent=1, sort_keys=True) + "\n")
