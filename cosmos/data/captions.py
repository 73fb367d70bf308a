"""Caption layouts and caption validation, shared by `download` (table -> url list) and `shard` (-> training json).

A :class:`CaptionFormat` names the column of an upstream caption table that holds the image URL, the
caption columns COSMOS samples from, the name each gets in the training json, and whether it is stored
as a pre-split sentence list (DreamLIP: the reference's `sample_dict` concatenates the fields with `+`,
section 3.1) or as a string that training splits on the fly (PixelProse: `textcrop_pixelprose`).
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cosmos.text.textcrop import split_caption


class CaptionError(ValueError):
    """A caption field that is missing, empty, not text or not valid UTF-8; `reason` is the skip reason a
    caption table reports for such a row (`empty_caption` or `non_utf8_caption`)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class CaptionFormat:
    name: str
    url_column: str                      # upstream column holding the image URL (the join key)
    columns: tuple[tuple[str, str], ...]  # (upstream column, field name in the training json)
    presplit: bool                       # store sentence lists (True) or validated strings (False)

    @property
    def upstream(self) -> tuple[str, ...]:
        return tuple(src for src, _ in self.columns)

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(dst for _, dst in self.columns)


def caption_format(name: str) -> CaptionFormat:
    """The layout called `name` (`data.sources.<s>.format`)."""
    from cosmos.data.formats.dreamlip import DREAMLIP
    from cosmos.data.formats.pixelprose import PIXELPROSE

    formats = {f.name: f for f in (DREAMLIP, PIXELPROSE)}
    if name not in formats:
        raise ValueError(f"unknown caption format {name!r}; known formats: {sorted(formats)}")
    return formats[name]


def utf8_or_none(value: Any) -> str | None:
    """Text as str; None for a value that is missing, not text, or not valid UTF-8 (surrogate-escaped bytes
    from a file read with ``errors="surrogateescape"``, or raw bytes that do not decode)."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str):
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def check_caption_row(row: Mapping[str, Any], fmt: CaptionFormat) -> str | None:
    """The skip reason for an upstream row (`non_utf8_caption` or `empty_caption`), or None if it is usable:
    exactly the rows :func:`caption_record` refuses, so `download` drops what `shard` would."""
    try:
        caption_record(row, fmt)
    except CaptionError as err:
        return err.reason
    return None


def caption_record(row: Mapping[str, Any], fmt: CaptionFormat) -> dict[str, Any]:
    """The training-json caption fields of one upstream row; raises CaptionError naming the bad field."""
    out: dict[str, Any] = {}
    for column, field in fmt.columns:
        raw = row.get(column)
        text = utf8_or_none(raw)
        if text is None:
            raise CaptionError(f"field {column!r} is missing or not valid UTF-8",
                               "empty_caption" if raw is None else "non_utf8_caption")
        sentences = split_caption(text)
        if not sentences:
            raise CaptionError(f"field {column!r} is empty", "empty_caption")
        out[field] = sentences if fmt.presplit else text.strip()
    return out


def url_digest(url: str) -> int:
    """An 8-byte key for URL de-duplication: a set of them costs about 70 bytes per URL, against a few
    hundred for the URL strings (tens of millions of URLs in Merged-30M)."""
    return int.from_bytes(hashlib.blake2b(url.encode("utf-8", "replace"), digest_size=8).digest(), "big")


def iter_table_rows(path: Path, columns: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """Stream the rows of a CSV (read as UTF-8 with surrogate escapes, so bad bytes mark a value instead of
    stopping the read) or Parquet caption table, restricted to `columns`; a missing column is an error."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        missing = [c for c in columns if c not in pf.schema_arrow.names]
        if missing:
            raise ValueError(f"{path}: caption table lacks column(s) {missing}; found {pf.schema_arrow.names}")
        for batch in pf.iter_batches(columns=list(columns), batch_size=65536):
            yield from batch.to_pylist()
        return
    csv.field_size_limit(1 << 30)  # long captions; the default limit is 128 KiB per field
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: caption table lacks column(s) {missing}; found {reader.fieldnames}")
        for row in reader:
            yield {c: row.get(c) for c in columns}


def read_caption_table(path: Path, url_column: str, fields: tuple[str, ...]) -> tuple[dict[str, dict], int]:
    """url -> {field: str or None} held in memory (None marks a value that was not valid UTF-8), and the
    number of duplicate URLs (the first row wins). For tables that fit in memory, such as the synthetic
    benchmark's; real data sets carry their captions through img2dataset instead (`cosmos.data.download`)."""
    table: dict[str, dict] = {}
    duplicates = 0
    for row in iter_table_rows(path, (url_column, *fields)):
        url = row[url_column]
        if url in table:
            duplicates += 1
            continue
        table[url] = {k: utf8_or_none(row.get(k)) for k in fields}
    return table, duplicates
