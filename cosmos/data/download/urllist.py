"""Caption tables -> the url list img2dataset reads: parquet parts with `url` and the caption columns.

Rows are streamed (a DreamLIP CSV is 6-30 GB), so memory holds one part plus a set of the 8-byte URL
digests kept so far: about 70 bytes per URL as Python ints in a set (measured: 70 MB per million), so
~0.25 GB for CC3M's 3.3M URLs and ~1.2 GB for PixelProse's 16.9M. Rows that cannot give a training
sample are dropped here, before any image is fetched, and counted by reason, checked in this order: no
http(s) URL (`bad_url`), a caption field that is missing or empty (`empty_caption`) or not valid UTF-8
(`non_utf8_caption`), a URL already listed by a usable row (`duplicate_url`: the first usable row wins,
so an image is never fetched twice). The parts are written atomically and deterministically, with a manifest that
lets a re-run reuse them; the img2dataset keys (= row positions) stay valid only while the url list does.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cosmos.data.captions import CaptionFormat, check_caption_row, iter_table_rows, url_digest, utf8_or_none
from cosmos.io.atomic import atomic_dir, atomic_write_json
from cosmos.io.checksum import file_sha256

URL_FIELD = "url"
MANIFEST = "manifest.json"


class TableError(RuntimeError):
    """A caption table with too many unusable rows."""


def url_list_identity(tables: list[Path], fmt: CaptionFormat, rows_per_part: int) -> dict[str, Any]:
    """What a url list is built from: the tables (name, size), the caption layout and the part size."""
    return {
        "tables": [{"name": t.name, "bytes": t.stat().st_size} for t in tables],
        "format": fmt.name,
        "columns": [fmt.url_column, *fmt.upstream],
        "rows_per_part": rows_per_part,
    }


def _clean_rows(tables: list[Path], fmt: CaptionFormat, counts: Counter) -> Iterator[dict[str, str]]:
    seen: set[int] = set()
    for table in tables:
        for row in iter_table_rows(table, (fmt.url_column, *fmt.upstream)):
            counts["rows"] += 1
            url = (utf8_or_none(row.get(fmt.url_column)) or "").strip()
            if not url.lower().startswith(("http://", "https://")):
                counts["bad_url"] += 1
                continue
            reason = check_caption_row(row, fmt)
            if reason is not None:  # before the duplicate check: an unusable row must not hide a usable one
                counts[reason] += 1
                continue
            digest = url_digest(url)
            if digest in seen:
                counts["duplicate_url"] += 1
                continue
            seen.add(digest)
            yield {URL_FIELD: url, **{c: utf8_or_none(row[c]) for c in fmt.upstream}}


def read_url_list_manifest(out_dir: str | Path) -> dict | None:
    path = Path(out_dir) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None


def reusable_tables(out_dir: str | Path, request: dict[str, Any]) -> list[Path] | None:
    """The tables of the existing url list, if it was built for the same `request` (repo, revision, files)
    and they are still there unchanged: a resumed run then needs no network to find them."""
    previous = read_url_list_manifest(out_dir)
    if previous is None or previous.get("request") != request:
        return None
    paths = [Path(p) for p in previous.get("table_paths", [])]
    sizes = [t["bytes"] for t in previous["identity"]["tables"]]
    if not paths or not all(p.is_file() and p.stat().st_size == n for p, n in zip(paths, sizes)):
        return None
    return paths


def build_url_list(tables: list[Path], fmt: CaptionFormat, out_dir: str | Path, rows_per_part: int,
                   max_bad_fraction: float, request: dict[str, Any] | None = None) -> dict:
    """Write (or reuse, when built from the same tables and settings) `out_dir/part-NNNNN.parquet`."""
    out_dir = Path(out_dir)
    identity = url_list_identity(tables, fmt, rows_per_part)
    previous = read_url_list_manifest(out_dir)
    if previous is not None and previous.get("identity") == identity:
        if previous.get("request") != request:
            previous.update(request=request, table_paths=[str(t.resolve()) for t in tables])
            atomic_write_json(out_dir / MANIFEST, previous)
        return previous
    counts: Counter = Counter()
    schema = pa.schema([(URL_FIELD, pa.string()), *[(c, pa.string()) for c in fmt.upstream]])
    with atomic_dir(out_dir) as tmp:
        parts, buffer = [], []

        def flush() -> None:
            name = f"part-{len(parts):05d}.parquet"
            columns = {k: [r[k] for r in buffer] for k in schema.names}
            pq.write_table(pa.Table.from_pydict(columns, schema=schema), tmp / name, compression="zstd")
            parts.append({"file": name, "rows": len(buffer), "sha256": file_sha256(tmp / name)})
            buffer.clear()

        for row in _clean_rows(tables, fmt, counts):
            buffer.append(row)
            if len(buffer) == rows_per_part:
                flush()
        if buffer:
            flush()
        kept = sum(p["rows"] for p in parts)
        rows = counts.pop("rows", 0)
        bad = rows - kept - counts.get("duplicate_url", 0)
        if kept == 0 or (rows and bad / rows > max_bad_fraction):
            raise TableError(
                f"caption table(s) {[t.name for t in tables]}: {bad} of {rows} rows unusable "
                f"({dict(counts)}), above data.download.max_table_bad_fraction={max_bad_fraction:.2%}, "
                "or no row left. Is data.sources.<name>.format right for these files?"
            )
        manifest = {"identity": identity, "request": request, "table_paths": [str(t.resolve()) for t in tables],
                    "rows": rows, "kept": kept, "skipped": dict(sorted(counts.items())),
                    "parts": parts}
        atomic_write_json(tmp / MANIFEST, manifest)
    return manifest
