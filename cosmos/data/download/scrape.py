"""Run img2dataset (in its own interpreter) over a url list, watch its per-shard stats, stop on failure.

img2dataset pins dependencies the project cannot share (webdataset<0.3, pandas<3), so it lives in its own
virtual environment (`.venv/img2dataset`, made by `scripts/bootstrap.sh`) and runs as a subprocess in its
own process group, driven by a small script and a JSON of keyword arguments. `incremental_mode=
"incremental"` makes a re-run skip every shard that has its `NNNNN_stats.json` (written after the tar is
closed) and redo the others from the same rows, so an interrupted run resumes without loss or duplicates.
While it runs, the finished shards' stats are read every `poll_seconds`; once `min_checked` URLs were
tried and more than `max_failed_fraction` of them failed, the run is stopped with a report by reason.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cosmos.data.download.config import DownloadConfig
from cosmos.io.atomic import atomic_write_json, atomic_write_text

ENV_PYTHON = "COSMOS_IMG2DATASET_PYTHON"
RUNNER = '''"""Written by cosmos.data.download.scrape: img2dataset.download(**kwargs in the JSON file argv[1])."""
import json
import sys

if __name__ == "__main__":  # img2dataset spawns workers that re-import this file
    from img2dataset import download

    with open(sys.argv[1], encoding="utf-8") as f:
        download(**json.load(f))
'''

_REASONS = (  # first match wins; img2dataset's messages are urllib / OpenCV strings
    (re.compile(r"HTTP Error (\d+)"), lambda m: f"http_{m.group(1)}"),
    (re.compile(r"timed out|timeout", re.I), "timeout"),
    (re.compile(r"decod|cannot identify|not an image", re.I), "not_an_image"),
    (re.compile(r"X-Robots-Tag", re.I), "disallowed_by_site"),
    (re.compile(r"too small|too large|aspect ratio", re.I), "filtered_by_size"),
    (re.compile(r"hash mismatch", re.I), "hash_mismatch"),
    (re.compile(r"urlopen error|Connection|Remote end|SSL|certificate|Name or service|Errno", re.I),
     "connection_error"),
)


class DownloadError(RuntimeError):
    """img2dataset failed, or too many images could not be fetched."""


def failure_reason(message: str) -> str:
    """A short category for one of img2dataset's error messages (`http_404`, `timeout`, `not_an_image`, ...)."""
    for pattern, reason in _REASONS:
        m = pattern.search(message)
        if m:
            return reason(m) if callable(reason) else reason
    return "other"


@dataclass
class ScrapeSummary:
    shards: list[dict] = field(default_factory=list)
    reasons: Counter = field(default_factory=Counter)
    messages: Counter = field(default_factory=Counter)

    @property
    def count(self) -> int:
        return sum(s["count"] for s in self.shards)

    @property
    def successes(self) -> int:
        return sum(s["successes"] for s in self.shards)

    @property
    def failed_fraction(self) -> float:
        return 1.0 - self.successes / self.count if self.count else 0.0

    def as_dict(self) -> dict:
        return {"count": self.count, "successes": self.successes, "failed": self.count - self.successes,
                "failed_fraction": round(self.failed_fraction, 6), "reasons": dict(sorted(self.reasons.items())),
                "messages": dict(self.messages.most_common(20)), "shards": self.shards}


def read_shard_stats(images_dir: str | Path) -> ScrapeSummary:
    """Success / failure counts of every finished shard (`NNNNN_stats.json`), in shard order."""
    summary = ScrapeSummary()
    for path in sorted(Path(images_dir).glob("*_stats.json")):
        try:
            stats = json.loads(path.read_text())
        except (OSError, ValueError):  # being written right now: read it on the next poll
            continue
        failures = {k: v for k, v in stats.get("status_dict", {}).items() if k != "success"}
        for message, n in failures.items():
            summary.reasons[failure_reason(message)] += n
            summary.messages[message[:120]] += n
        summary.shards.append({
            "shard": path.name.split("_")[0], "count": stats["count"], "successes": stats["successes"],
            "failed_to_download": stats["failed_to_download"], "failed_to_resize": stats["failed_to_resize"],
        })
    return summary


def img2dataset_python(configured: str | None = None) -> str:
    """The interpreter that has img2dataset: the config, $COSMOS_IMG2DATASET_PYTHON, .venv/img2dataset."""
    candidates = [configured, os.environ.get(ENV_PYTHON), str(Path(sys.prefix) / "img2dataset" / "bin" / "python")]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    raise DownloadError(
        "img2dataset not found: run `bash scripts/bootstrap.sh` (it installs it into .venv/img2dataset), or "
        f"point data.download.img2dataset_python or ${ENV_PYTHON} at a Python that has it"
    )


def img2dataset_kwargs(url_dir: Path, images_dir: Path, columns: tuple[str, ...], cfg: DownloadConfig) -> dict:
    return {
        "url_list": str(url_dir.resolve()), "input_format": "parquet", "url_col": "url",
        "save_additional_columns": list(columns), "output_folder": str(images_dir.resolve()),
        "output_format": "webdataset", "image_size": cfg.image_size, "resize_mode": cfg.resize_mode,
        "resize_only_if_bigger": cfg.resize_only_if_bigger, "encode_quality": cfg.encode_quality,
        "encode_format": "jpg", "number_sample_per_shard": cfg.samples_per_tar,
        "processes_count": cfg.processes_count, "thread_count": cfg.thread_count, "timeout": cfg.timeout,
        "retries": cfg.retries, "incremental_mode": "incremental", "enable_wandb": False,
        "extract_exif": False, "compute_hash": "sha256", "distributor": "multiprocessing",
    }


def _stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """End img2dataset and the workers it spawned (its own process group)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _too_many_failures(summary: ScrapeSummary, cfg: DownloadConfig, where: str) -> DownloadError:
    err = DownloadError(
        f"{where}: {summary.count - summary.successes} of {summary.count} image downloads failed "
        f"({summary.failed_fraction:.1%} > data.download.max_failed_fraction={cfg.max_failed_fraction:.1%}); "
        f"by reason {dict(summary.reasons.most_common())}; most frequent messages "
        f"{dict(summary.messages.most_common(3))}. Check the network and the url list, or raise the limit; "
        "a re-run resumes where this one stopped."
    )
    err.summary = summary
    return err


def scrape(url_dir: str | Path, images_dir: str | Path, columns: tuple[str, ...], cfg: DownloadConfig,
           log_path: str | Path, on_progress: Callable[[ScrapeSummary], None] | None = None) -> ScrapeSummary:
    """Download the url list into webdataset tars under `images_dir` (resuming), return the shard stats."""
    url_dir, images_dir, log_path = Path(url_dir), Path(images_dir), Path(log_path)
    python = img2dataset_python(cfg.img2dataset_python)
    run_dir = log_path.parent
    runner, kwargs_path = run_dir / "run_img2dataset.py", run_dir / "img2dataset_kwargs.json"
    atomic_write_text(runner, RUNNER)
    atomic_write_json(kwargs_path, img2dataset_kwargs(url_dir, images_dir, columns, cfg))
    env = {**os.environ, "WANDB_MODE": "disabled", "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONUNBUFFERED": "1"}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([python, str(runner), str(kwargs_path)], stdout=log, stderr=subprocess.STDOUT,
                                cwd=run_dir, env=env, start_new_session=True)
        try:
            while True:
                try:
                    returncode = proc.wait(timeout=cfg.poll_seconds)
                    break
                except subprocess.TimeoutExpired:
                    pass
                summary = read_shard_stats(images_dir)
                if on_progress is not None:
                    on_progress(summary)
                if summary.count >= max(cfg.min_checked, 1) and summary.failed_fraction > cfg.max_failed_fraction:
                    raise _too_many_failures(summary, cfg, f"stopped {images_dir}")
        finally:
            if proc.poll() is None:
                _stop(proc)
    if returncode != 0:
        tail = log_path.read_text(errors="replace")[-2000:]
        raise DownloadError(f"img2dataset exited with status {returncode} (log {log_path}); last lines:\n{tail}")
    summary = read_shard_stats(images_dir)
    if summary.count and summary.failed_fraction > cfg.max_failed_fraction:
        raise _too_many_failures(summary, cfg, str(images_dir))
    return summary
