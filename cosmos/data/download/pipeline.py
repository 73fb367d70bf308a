"""The `download` stage for real data sets: every source fetched and resumed in the work dir, then published
under `<raw>/pretrain/<source>/` (see the package docstring for the layout)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from cosmos.data.captions import caption_format
from cosmos.data.download.annotations import fetch_annotations
from cosmos.data.download.config import REPORT, DownloadConfig, SourceConfig
from cosmos.data.download.guard import (DownloadError, check_fingerprint, exclusive_lock, settings_fingerprint,
                                       url_parts_fingerprint, write_fingerprint)
from cosmos.data.download.scrape import ScrapeSummary, finished_shards, img2dataset_kwargs, scrape
from cosmos.data.download.urllist import build_url_list, reusable_tables, url_list_identity
from cosmos.io.atomic import atomic_dir, atomic_write_json


def download_source(name: str, source: SourceConfig, cfg: DownloadConfig,
                    on_progress: Callable[[ScrapeSummary], None] | None = None) -> dict:
    """Fetch one source into `cfg.work_dir/name` (resuming, under an exclusive lock on that folder);
    returns and writes its report."""
    work = Path(cfg.work_dir) / name
    with exclusive_lock(work):
        return _download_source(name, source, cfg, work, on_progress)


def _download_source(name: str, source: SourceConfig, cfg: DownloadConfig, work: Path,
                     on_progress: Callable[[ScrapeSummary], None] | None) -> dict:
    fmt = caption_format(source.format)
    images_dir = work / "images"
    # Finished shards are only reused with the url list and settings they were made with (guard.py). Each
    # check runs before the step that could change what it compares.
    fp = settings_fingerprint(img2dataset_kwargs(work / "urls", images_dir, fmt.upstream, cfg))
    check_fingerprint(images_dir, fp)
    request = {"hf_repo": source.hf_repo, "hf_revision": source.hf_revision, "files": list(source.files),
               "local_path": source.local_path}
    tables = reusable_tables(work / "urls", request) or fetch_annotations(source, work / "annotations")
    fp.update(url_list_identity(tables, fmt, cfg.rows_per_part))
    check_fingerprint(images_dir, fp)
    urls = build_url_list(tables, fmt, work / "urls", cfg.rows_per_part, cfg.max_table_bad_fraction, request)
    fp["url_list"] = url_parts_fingerprint(urls["parts"])
    check_fingerprint(images_dir, fp)
    write_fingerprint(images_dir, fp)
    report = {"source": name, "format": fmt.name, "tables": [t.name for t in tables],
              "table": {k: urls[k] for k in ("rows", "kept", "skipped")}}
    try:
        summary = scrape(work / "urls", images_dir, fmt.upstream, cfg, work / "img2dataset.log", on_progress)
    except DownloadError as err:
        if hasattr(err, "summary"):
            atomic_write_json(work / REPORT, {**report, "images": err.summary.as_dict(), "error": str(err)})
        raise
    report["images"] = summary.as_dict()
    atomic_write_json(work / REPORT, report)
    if summary.count != urls["kept"]:
        raise DownloadError(
            f"{name}: img2dataset finished {summary.count} of the {urls['kept']} URLs in {images_dir} "
            f"({len(summary.shards)} shards with stats); run the download again to resume the missing shards"
        )
    return report


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link (copy across filesystems) the finished shards of `src` into `dst`."""
    dst.mkdir(parents=True, exist_ok=True)
    for shard in sorted(finished_shards(src)):
        for path in (src / f"{shard}.tar", src / f"{shard}.parquet", src / f"{shard}_stats.json"):
            if not path.exists():
                continue
            try:
                os.link(path, dst / path.name)
            except OSError:
                shutil.copy2(path, dst / path.name)


def download_web_dataset(sources: Mapping[str, SourceConfig], cfg: DownloadConfig, raw_dir: str | Path,
                         on_progress: Callable[[ScrapeSummary], None] | None = None) -> dict:
    """Download every source, then publish them atomically under `raw_dir/pretrain/<source>/`."""
    if not sources:
        raise ValueError("data.sources is empty: a real data set lists at least one source")
    reports = {name: download_source(name, src, cfg, on_progress) for name, src in sources.items()}
    summary = {
        "sources": {
            name: {"table_rows": r["table"]["rows"], "urls": r["table"]["kept"],
                   "table_skipped": r["table"]["skipped"], "images": r["images"]["successes"],
                   "failed": r["images"]["failed"], "failed_fraction": r["images"]["failed_fraction"],
                   "failure_reasons": r["images"]["reasons"], "shards": len(r["images"]["shards"])}
            for name, r in reports.items()
        },
    }
    summary["images"] = sum(s["images"] for s in summary["sources"].values())
    with atomic_dir(raw_dir) as tmp:
        for name, report in reports.items():
            _link_tree(Path(cfg.work_dir) / name / "images", tmp / "pretrain" / name / "images")
            atomic_write_json(tmp / "pretrain" / name / REPORT, report)
        atomic_write_json(tmp / REPORT, summary)
    return summary

