"""Typed views of `data.sources.<name>` and `data.download` (real, web-scraped data sets only)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

REPORT = "download_report.json"  # per source in <raw>/pretrain/<source>/, and the summary in <raw>/
RESIZE_MODES = ("no", "border", "keep_ratio", "keep_ratio_largest", "center_crop")


@dataclass(frozen=True)
class SourceConfig:
    """Where one source's caption table(s) come from, and their layout."""

    format: str                        # caption layout: dreamlip | pixelprose (cosmos.data.captions)
    files: tuple[str, ...]             # file names or glob patterns inside the Hub repo / local folder
    hf_repo: str | None = None         # Hugging Face dataset repo id
    hf_revision: str = "main"          # branch, tag or commit of the Hub repo
    local_path: str | None = None      # a folder that already holds `files`: skips the Hub

    def __post_init__(self) -> None:
        # One pattern given as a string (`-S data.sources.X.files=a.parquet`) is a list of one, not of
        # its characters.
        object.__setattr__(self, "files", (self.files,) if isinstance(self.files, str) else tuple(self.files))
        if not self.files:
            raise ValueError("data.sources.<name>.files must list at least one file or pattern")
        if self.hf_repo is None and self.local_path is None:
            raise ValueError("data.sources.<name>: set hf_repo (download from the Hub) or local_path")


@dataclass(frozen=True)
class DownloadConfig:
    """img2dataset settings plus the failure limits of the `download` stage."""

    work_dir: str                      # resumable working area (tables, url lists, img2dataset output)
    rows_per_part: int = 500_000       # url-list parquet part size (img2dataset reads one part at a time)
    image_size: int = 256
    resize_mode: str = "keep_ratio"
    resize_only_if_bigger: bool = True
    encode_quality: int = 95
    samples_per_tar: int = 10_000      # img2dataset number_sample_per_shard
    processes_count: int = 4
    thread_count: int = 64
    timeout: float = 10.0              # seconds per request
    retries: int = 2
    max_failed_fraction: float = 0.5   # stop when more image downloads than this fail
    min_checked: int = 10_000          # ... judged once this many URLs were tried (and always at the end)
    max_table_bad_fraction: float = 0.05  # caption-table rows without a usable URL or caption
    poll_seconds: float = 5.0          # how often the progress of img2dataset is read
    img2dataset_python: str | None = None  # interpreter with img2dataset; None: .venv/img2dataset

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"data.download.resize_mode={self.resize_mode!r}; expected one of {RESIZE_MODES}")
        for name in ("rows_per_part", "image_size", "samples_per_tar", "processes_count", "thread_count"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"data.download.{name}={value!r} must be an integer >= 1")
        for name in ("max_failed_fraction", "max_table_bad_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"data.download.{name}={getattr(self, name)} must lie in [0, 1]")
        if self.timeout <= 0 or self.retries < 0 or self.min_checked < 0 or self.poll_seconds <= 0:
            raise ValueError("data.download: timeout and poll_seconds must be > 0, retries and min_checked >= 0")


def expected_images(raw_dir: str | Path, source: str) -> int | None:
    """Images the download delivered for `source` (None when it left no report under `raw_dir`)."""
    path = Path(raw_dir) / "pretrain" / source / REPORT
    return json.loads(path.read_text())["images"]["successes"] if path.exists() else None
