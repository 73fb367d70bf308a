"""Run img2dataset (in its own interpreter) over a url list, watch its per-shard stats, stop on failure.

img2dataset pins dependencies the project cannot share (webdataset<0.3, pandas<3), so it lives in its own
virtual environment (`.venv/img2dataset`, made by `scripts/bootstrap.sh`) and runs as a subprocess in its
own process group, driven by a small script and a JSON of keyword arguments. `incremental_mode=
"incremental"` makes a re-run skip every shard that has its `NNNNN_stats.json` (written after the tar is
closed) and redo the others from the same rows, so an interrupted run resumes without loss or duplicates.
While it runs, the stats of the shards finished *by this run* are read every `poll_seconds`; once
`min_checked` of their URLs were tried and more than `max_failed_fraction` of them failed, the run is
stopped with a report by reason. At the end the same limit applies to this run's shards, or, if it tried
fewer than `min_checked` URLs (a resume that redid a shard or two), to every shard in the folder. Shards of this run that failed above
that limit mostly by timeouts or connection errors are then moved aside into `images/failed-<time>/`,
so that the next run fetches them again instead of skipping them. SIGTERM and SIGHUP stop img2dataset too.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cosmos.data.download.config import DownloadConfig
from cosmos.data.download.guard import DownloadError, exit_on_termination
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
NETWORK_REASONS = ("timeout", "connection_error")  # failures a better network fixes: worth a re-fetch


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


def finished_shards(images_dir: str | Path) -> set[str]:
    """The ids (`NNNNN`) of the shards that have their `NNNNN_stats.json`."""
    return {path.name.split("_")[0] for path in Path(images_dir).glob("*_stats.json")}


def read_shard_stats(images_dir: str | Path, exclude: set[str] = frozenset()) -> ScrapeSummary:
    """Success / failure counts of every finished shard (`NNNNN_stats.json`) whose id is not in `exclude`,
    in shard order."""
    summary = ScrapeSummary()
    for path in sorted(Path(images_dir).glob("*_stats.json")):
        if path.name.split("_")[0] in exclude:
            continue
        try:
            stats = json.loads(path.read_text())
        except (OSError, ValueError):  # being written right now: read it on the next poll
            continue
        failures = {k: v for k, v in stats.get("status_dict", {}).items() if k != "success"}
        reasons: Counter = Counter()
        for message, n in failures.items():
            reasons[failure_reason(message)] += n
            summary.messages[message[:120]] += n
        summary.reasons.update(reasons)
        summary.shards.append({
            "shard": path.name.split("_")[0], "count": stats["count"], "successes": stats["successes"],
            "failed_to_download": stats["failed_to_download"], "failed_to_resize": stats["failed_to_resize"],
            "reasons": dict(sorted(reasons.items())),
        })
    return summary


def img2dataset_python(configured: str | None = None) -> str:
    """The interpreter that has img2dataset: the config, else $COSMOS_IMG2DATASET_PYTHON, else
    .venv/img2dataset. A path that is set but does not exist is an error, never skipped."""
    settings = ((configured, "data.download.img2dataset_python"), (os.environ.get(ENV_PYTHON), f"${ENV_PYTHON}"))
    for candidate, where in settings:
        if candidate:
            if not Path(candidate).exists():
                raise DownloadError(f"{where}={candidate} does not exist: point it at a Python that has "
                                    "img2dataset, or unset it to use .venv/img2dataset (scripts/bootstrap.sh)")
            return candidate
    default = Path(sys.prefix) / "img2dataset" / "bin" / "python"
    if default.exists():
        return str(default)
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


def _too_many(summary: ScrapeSummary, cfg: DownloadConfig) -> bool:
    return summary.failed_fraction > cfg.max_failed_fraction


def _move_aside_network_failures(images_dir: Path, summary: ScrapeSummary,
                                 cfg: DownloadConfig) -> tuple[list[str], Path]:
    """Move the shards of `summary` that failed above the limit, mostly by timeouts or connection errors,
    into `images_dir/failed-<time>/` (stats first), so that img2dataset fetches them again; their ids, and
    that folder."""
    moved = []
    folder = images_dir / time.strftime("failed-%Y%m%d-%H%M%S")
    for shard in summary.shards:
        failed = shard["count"] - shard["successes"]
        network = sum(shard["reasons"].get(r, 0) for r in NETWORK_REASONS)
        if not (shard["count"] and failed / shard["count"] > cfg.max_failed_fraction and 2 * network > failed):
            continue
        folder.mkdir(exist_ok=True)
        for name in (f"{shard['shard']}_stats.json", f"{shard['shard']}.tar", f"{shard['shard']}.parquet"):
            if (images_dir / name).exists():
                os.replace(images_dir / name, folder / name)
        moved.append(shard["shard"])
    return moved, folder


def _too_many_failures(summary: ScrapeSummary, images_dir: Path, cfg: DownloadConfig,
                       scope: str = "this run") -> DownloadError:
    """The error for shards (`summary`, those of `scope`) that failed too often, after moving aside the
    shards a better network would fix."""
    moved, folder = _move_aside_network_failures(images_dir, summary, cfg)
    retry = (f"Moved the {len(moved)} shard(s) {moved} that failed mostly by timeouts or connection errors to "
             f"{folder}, so that the next run fetches them again. " if moved else "")
    err = DownloadError(
        f"{images_dir}: {summary.count - summary.successes} of the {summary.count} image downloads of {scope} "
        f"failed ({summary.failed_fraction:.1%} > data.download.max_failed_fraction="
        f"{cfg.max_failed_fraction:.1%}); by reason {dict(summary.reasons.most_common())}; most frequent "
        f"messages {dict(summary.messages.most_common(3))}. {retry}Check the network and the url "
        "list, or raise the limit, then run again: finished shards are kept, and the next run is judged on "
        "the shards it fetches itself."
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
    earlier = finished_shards(images_dir)  # shards of earlier runs: img2dataset skips them
    with open(log_path, "ab") as log, exit_on_termination():
        proc = subprocess.Popen([python, str(runner), str(kwargs_path)], stdout=log, stderr=subprocess.STDOUT,
                                cwd=run_dir, env=env, start_new_session=True)
        try:
            while True:
                try:
                    returncode = proc.wait(timeout=cfg.poll_seconds)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if on_progress is not None:
                    on_progress(read_shard_stats(images_dir))
                this_run = read_shard_stats(images_dir, exclude=earlier)
                if this_run.count >= max(cfg.min_checked, 1) and _too_many(this_run, cfg):
                    _stop(proc)
                    raise _too_many_failures(this_run, images_dir, cfg)
        finally:
            if proc.poll() is None:
                _stop(proc)
    if returncode != 0:
        tail = log_path.read_text(errors="replace")[-2000:]
        raise DownloadError(f"img2dataset exited with status {returncode} (log {log_path}); last lines:\n{tail}")
    # A run that tried fewer than `min_checked` URLs (typically a resume that only redid a shard or two)
    # is too small to judge alone: one dead URL in a one-row shard is 100%. It is judged with the shards
    # kept from earlier runs, which for a fresh run is the same set.
    this_run, everything = read_shard_stats(images_dir, exclude=earlier), read_shard_stats(images_dir)
    if this_run.count >= cfg.min_checked:
        judged, scope = this_run, "this run"
    else:
        judged, scope = everything, "this run and the shards kept from earlier runs"
    if judged.count and _too_many(judged, cfg):
        raise _too_many_failures(judged, images_dir, cfg, scope)
    return everything
