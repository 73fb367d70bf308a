"""`shard`: raw image + caption data -> training webdataset shards (`jpg` + `json` per sample) + manifest.

Input is img2dataset's webdataset output (`<key>.jpg` or other image, `<key>.json` holding the `url`)
and a caption table in the DreamLIP column layout keyed by `Image Path` (= url). Captions are joined to
images by URL, never by row index (reference section 9), then pre-split into sentence lists with the
reference's `split_caption` (reference 3.1: `sample_dict` concatenates fields, so each must be a list).

Bad samples (undecodable or truncated image, no caption row for the URL, a caption field that is missing,
empty, not text or not UTF-8, broken metadata) are skipped, counted by reason and listed in the report;
the run fails, writing nothing, when they exceed `max_bad_fraction`. Output appears atomically.
"""

from __future__ import annotations

import csv
import hashlib
import json
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import webdataset as wds

from cosmos.data.formats.dreamlip import DREAMLIP_COLUMNS, URL_COLUMN
from cosmos.data.images import BadImageError, to_jpeg_bytes
from cosmos.io.atomic import atomic_dir, atomic_write_json
from cosmos.text.textcrop import split_caption

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
TAR_MTIME = 0.0
_MAX_LISTED = 1000


class ShardError(RuntimeError):
    """Too many bad samples, or no usable input at all."""


@dataclass
class ShardStats:
    written: int = 0
    skipped: Counter = field(default_factory=Counter)
    bad: list[dict[str, str]] = field(default_factory=list)

    def skip(self, key: str, reason: str, detail: str) -> None:
        self.skipped[reason] += 1
        if len(self.bad) < _MAX_LISTED:
            self.bad.append({"key": key, "reason": reason, "detail": detail[:200]})

    @property
    def seen(self) -> int:
        return self.written + sum(self.skipped.values())


def read_caption_table(path: Path, url_column: str, fields: tuple[str, ...]) -> tuple[dict[str, dict], int]:
    """url -> {field: str or None}; None marks a value that was not valid UTF-8. Returns duplicate count."""
    table: dict[str, dict] = {}
    duplicates = 0
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in (url_column, *fields) if c not in (reader.fieldnames or [])]
        if missing:
            raise ShardError(f"{path}: caption table lacks column(s) {missing}; found {reader.fieldnames}")
        for row in reader:
            url = row[url_column]
            if url in table:
                duplicates += 1
                continue
            table[url] = {k: _utf8_or_none(row.get(k)) for k in fields}
    return table, duplicates


def _utf8_or_none(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # surrogate-escaped bytes: the file was not UTF-8 here
        return None
    return value


def iter_raw_samples(tar_path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Group the members of one img2dataset tar by key; a truncated tar ends the shard, it does not crash."""
    current, parts = None, {}
    try:
        with tarfile.open(tar_path, "r") as tf:
            for member in tf:
                if not member.isfile():
                    continue
                name = Path(member.name).name
                key, _, ext = name.partition(".")
                if key != current and current is not None:
                    yield current, parts
                    parts = {}
                current = key
                parts[ext.lower()] = tf.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as err:
        parts["__tar_error__"] = str(err).encode()
    if current is not None:
        yield current, parts


def _caption_lists(row: dict, fields: tuple[str, ...]) -> dict[str, list[str]]:
    out = {}
    for name in fields:
        value = row.get(name)
        if value is None:
            raise ValueError(f"field {name!r} is missing or not valid UTF-8")
        sentences = split_caption(value)
        if not sentences:
            raise ValueError(f"field {name!r} is empty")
        out[name] = sentences
    return out


def _clean_sample(key, parts, table, fields, stats) -> dict | None:
    image_ext = next((e for e in IMAGE_EXTS if e in parts), None)
    if image_ext is None:
        stats.skip(key, "missing_image", "no jpg/png/webp member")
        return None
    try:
        url = json.loads(parts["json"])["url"]
    except (KeyError, ValueError, TypeError) as err:
        stats.skip(key, "malformed_metadata", f"{type(err).__name__}: {err}")
        return None
    row = table.get(url)
    if row is None:
        stats.skip(key, "no_caption", f"no caption row for url {url}")
        return None
    try:
        captions = _caption_lists(row, fields)
    except ValueError as err:
        stats.skip(key, "malformed_caption", str(err))
        return None
    try:
        jpeg = to_jpeg_bytes(parts[image_ext])
    except BadImageError as err:
        stats.skip(key, "corrupt_image", str(err))
        return None
    record = {"url": url, **captions}
    return {"__key__": key, "jpg": jpeg, "json": json.dumps(record, sort_keys=True).encode("utf-8")}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_shards(samples: Iterator[dict], out: Path, samples_per_shard: int, prefix: str) -> list[dict]:
    shards, writer, count = [], None, 0
    for sample in samples:
        if count % samples_per_shard == 0:
            if writer is not None:
                writer.close()
            name = f"{prefix}-{len(shards):06d}.tar"
            shards.append({"file": name, "samples": 0})
            writer = wds.TarWriter(str(out / name), mtime=TAR_MTIME)
        writer.write(sample)
        shards[-1]["samples"] += 1
        count += 1
    if writer is not None:
        writer.close()
    for shard in shards:
        path = out / shard["file"]
        shard.update(bytes=path.stat().st_size, sha256=_sha256(path))
    return shards


def shard_dataset(
    images_dir: str | Path,
    table_path: str | Path,
    out_dir: str | Path,
    samples_per_shard: int = 1000,
    max_bad_fraction: float = 0.01,
    url_column: str = URL_COLUMN,
    fields: tuple[str, ...] = DREAMLIP_COLUMNS,
    prefix: str = "train",
) -> dict:
    """Turn img2dataset tars + a caption table into training shards under `out_dir`; returns the manifest."""
    if samples_per_shard < 1:
        raise ValueError(f"data.shard.samples_per_shard={samples_per_shard} must be >= 1")
    if not 0.0 <= max_bad_fraction < 1.0:
        raise ValueError(f"data.shard.max_bad_fraction={max_bad_fraction} must lie in [0, 1)")
    tars = sorted(Path(images_dir).glob("*.tar"))
    if not tars:
        raise ShardError(f"no .tar files in {images_dir}: run the download stage first")
    table, duplicates = read_caption_table(Path(table_path), url_column, fields)
    stats = ShardStats()

    def clean() -> Iterator[dict]:
        for tar in tars:
            for key, parts in iter_raw_samples(tar):
                if "__tar_error__" in parts:
                    stats.skip(f"{tar.name}:{key}", "truncated_tar", parts["__tar_error__"].decode())
                    continue
                sample = _clean_sample(key, parts, table, fields, stats)
                if sample is not None:
                    stats.written += 1
                    yield sample

    with atomic_dir(out_dir) as tmp:
        shards = _write_shards(clean(), tmp, samples_per_shard, prefix)
        bad_fraction = 1.0 - stats.written / stats.seen if stats.seen else 1.0
        if stats.written == 0 or bad_fraction > max_bad_fraction:
            raise ShardError(
                f"{sum(stats.skipped.values())} of {stats.seen} samples are bad ({bad_fraction:.2%} > "
                f"data.shard.max_bad_fraction={max_bad_fraction:.2%}); reasons {dict(stats.skipped)}; "
                f"first bad samples: {stats.bad[:5]}. Fix the input, or raise max_bad_fraction if the loss "
                "is acceptable. Nothing was written."
            )
        manifest = {
            "num_samples": stats.written,
            "num_shards": len(shards),
            "samples_per_shard": samples_per_shard,
            "shards": shards,
            "skipped": dict(sorted(stats.skipped.items())),
            "bad_fraction": round(bad_fraction, 6),
            "duplicate_urls_in_table": duplicates,
            "caption_fields": list(fields),
        }
        atomic_write_json(tmp / "manifest.json", manifest)
        atomic_write_json(tmp / "bad_samples.json", stats.bad)
    return manifest
