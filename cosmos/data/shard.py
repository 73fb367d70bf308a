"""`shard`: raw image + caption data -> training webdataset shards (`jpg` + `json` per sample) + manifest.

Input is img2dataset's webdataset output (`<key>.jpg` or other image, `<key>.json` holding the `url`), one
folder per source, with the captions coming either
- from a caption table in memory, joined by URL, never by row index (reference section 9): the synthetic
  benchmark's DreamLIP-layout `annotations.csv`, keyed by `Image Path` (= url); or
- from each sample's json, where `download` had img2dataset copy the caption columns of the very row whose
  URL it fetched (`save_additional_columns`), so that millions of captions never sit in memory.
Either way the caption fields of the source's :class:`~cosmos.data.captions.CaptionFormat` are validated
and, for DreamLIP, pre-split into sentence lists with the reference's `split_caption` (reference 3.1:
`sample_dict` concatenates fields, so each must be a list). Several sources are concatenated in order
(Merged-30M), their keys prefixed with the source name, and a URL seen before is dropped.

Bad samples (undecodable or truncated image, no caption for the URL, a caption field that is missing,
empty, not text or not UTF-8, broken metadata) are skipped, counted by reason and listed in the report;
the run fails, writing nothing, when they exceed `max_bad_fraction`, or when fewer than `min_shards`
shards (dataloader workers x ranks) come out. Output appears atomically.
"""

from __future__ import annotations

import json
import math
import tarfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import webdataset as wds

from cosmos.data.captions import CaptionError, CaptionFormat, caption_record, read_caption_table, url_digest
from cosmos.data.formats.dreamlip import DREAMLIP, DREAMLIP_COLUMNS, URL_COLUMN
from cosmos.data.images import BadImageError, to_jpeg_bytes
from cosmos.io.atomic import atomic_dir, atomic_write_json
from cosmos.io.checksum import file_sha256

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
TAR_MTIME = 0.0
_MAX_LISTED = 1000


class ShardError(RuntimeError):
    """Too many bad samples, too few shards, or no usable input at all."""


@dataclass(frozen=True)
class ShardConfig:
    """The `data.shard` config section."""

    samples_per_shard: int = 1000
    max_bad_fraction: float = 0.01
    min_shards: int = 1  # >= dataloader workers x ranks, so that every worker of every rank gets a shard

    def __post_init__(self) -> None:
        if not isinstance(self.samples_per_shard, int) or self.samples_per_shard < 1:
            raise ValueError(f"data.shard.samples_per_shard={self.samples_per_shard} must be an integer >= 1")
        if not 0.0 <= self.max_bad_fraction < 1.0:
            raise ValueError(f"data.shard.max_bad_fraction={self.max_bad_fraction} must lie in [0, 1)")
        if not isinstance(self.min_shards, int) or self.min_shards < 1:
            raise ValueError(f"data.shard.min_shards={self.min_shards} must be an integer >= 1")


@dataclass(frozen=True)
class ShardSource:
    """One input of `shard`: a folder of img2dataset tars and where their captions come from."""

    images_dir: Path
    fmt: CaptionFormat = DREAMLIP
    table: Path | None = None     # join by URL against this table; None: the captions are in each json
    name: str | None = None       # key prefix `<name>_`; None keeps img2dataset's keys
    expected: int | None = None   # images the download delivered, to size shards for `min_shards`


@dataclass
class ShardStats:
    written: int = 0
    duplicates: int = 0
    skipped: Counter = field(default_factory=Counter)
    bad: list[dict[str, str]] = field(default_factory=list)

    def skip(self, key: str, reason: str, detail: str) -> None:
        self.skipped[reason] += 1
        if len(self.bad) < _MAX_LISTED:
            self.bad.append({"key": key, "reason": reason, "detail": detail[:200]})

    @property
    def seen(self) -> int:
        return self.written + sum(self.skipped.values())


TAR_ERROR = "__tar_error__"


def iter_raw_samples(tar_path: Path) -> Iterator[tuple[str | None, dict[str, bytes]]]:
    """Group the members of one img2dataset tar by key; a truncated tar ends the shard, it does not crash.

    A read error yields the key being read (or None, when the cut came before any member) with the
    error under `TAR_ERROR`; the caller counts what the cut lost with :func:`lost_to_truncation`.
    """
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
        parts[TAR_ERROR] = str(err).encode()
    if current is not None or TAR_ERROR in parts:
        yield current, parts


def recorded_successes(tar_path: Path) -> int | None:
    """The successes img2dataset recorded for a tar in `<shard>_stats.json`; None without a readable one."""
    stats_path = tar_path.with_name(f"{tar_path.stem}_stats.json")
    try:
        return int(json.loads(stats_path.read_text())["successes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def lost_to_truncation(tar_path: Path, complete: int) -> int:
    """Samples a truncated tar lost: the successes img2dataset recorded in `<shard>_stats.json` for it,
    less the `complete` samples read before the cut; at least 1 (the sample being read), and exactly 1
    when no stats file says more, so a cut tar is never counted as smaller than it is."""
    expected = recorded_successes(tar_path)
    return 1 if expected is None else max(1, expected - complete)


def lost_at_clean_end(tar_path: Path, complete: int) -> int:
    """Samples missing from a tar that ended without a read error: Python's tarfile ends iteration quietly
    when a cut falls on or inside a member header, so only the stats file's count can tell (0 without one)."""
    expected = recorded_successes(tar_path)
    return 0 if expected is None else max(0, expected - complete)


Lookup = Callable[[str, Mapping[str, Any]], "Mapping[str, Any] | None"]


def _clean_sample(key: str, parts: dict[str, bytes], lookup: Lookup, fmt: CaptionFormat,
                  stats: ShardStats, seen_urls: set[int]) -> dict | None:
    image_ext = next((e for e in IMAGE_EXTS if e in parts), None)
    if image_ext is None:
        stats.skip(key, "missing_image", "no jpg/png/webp member")
        return None
    try:
        meta = json.loads(parts["json"])
        url = meta["url"]
        if not isinstance(url, str):
            raise TypeError(f"url is a {type(url).__name__}")
    except (KeyError, ValueError, TypeError) as err:
        stats.skip(key, "malformed_metadata", f"{type(err).__name__}: {err}")
        return None
    row = lookup(url, meta)
    if row is None:
        stats.skip(key, "no_caption", f"no caption row for url {url}")
        return None
    try:
        captions = caption_record(row, fmt)
    except CaptionError as err:
        stats.skip(key, "malformed_caption", str(err))
        return None
    try:
        jpeg = to_jpeg_bytes(parts[image_ext])
    except BadImageError as err:
        stats.skip(key, "corrupt_image", str(err))
        return None
    digest = url_digest(url)
    if digest in seen_urls:  # the same image listed twice (e.g. in two sources of Merged-30M)
        stats.duplicates += 1
        return None
    seen_urls.add(digest)
    record = {"url": url, **captions}
    return {"__key__": key, "jpg": jpeg, "json": json.dumps(record, sort_keys=True).encode("utf-8")}



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
        shard.update(bytes=path.stat().st_size, sha256=file_sha256(path))
    return shards


def _lookup_for(source: ShardSource) -> tuple[Lookup, int]:
    """How a source finds the caption row of a URL, and the duplicate URLs in its table."""
    if source.table is None:
        return (lambda url, meta: meta), 0
    try:
        table, duplicates = read_caption_table(Path(source.table), source.fmt.url_column, source.fmt.upstream)
    except (ValueError, OSError) as err:
        raise ShardError(str(err)) from err
    return (lambda url, meta: table.get(url)), duplicates


def _samples_per_shard(sources: list[ShardSource], cfg: ShardConfig) -> int:
    """`cfg.samples_per_shard`, lowered when the download's counts show it would give < `min_shards` shards."""
    expected = [s.expected for s in sources]
    if cfg.min_shards == 1 or any(e is None for e in expected):
        return cfg.samples_per_shard
    # The largest size s with ceil(usable / s) >= min_shards: enough shards as long as the bad samples
    # stay within max_bad_fraction (beyond that the run fails anyway).
    usable = math.floor(sum(expected) * (1.0 - cfg.max_bad_fraction))
    return max(1, min(cfg.samples_per_shard, (usable - 1) // (cfg.min_shards - 1)))


def shard_sources(sources: list[ShardSource], out_dir: str | Path, cfg: ShardConfig = ShardConfig(),
                  prefix: str = "train") -> dict:
    """Turn the sources' tars into training shards under `out_dir`, in source order; returns the manifest."""
    if not sources:
        raise ShardError("no sources to shard")
    formats = {s.fmt for s in sources}
    if len(formats) > 1:
        raise ShardError(f"sources mix caption formats {sorted(f.name for f in formats)}; one data set "
                         "must have one caption layout, or training samples would disagree on their fields")
    fmt = sources[0].fmt
    inputs = []
    for source in sources:
        tars = sorted(Path(source.images_dir).glob("*.tar"))
        if not tars:
            raise ShardError(f"no .tar files in {source.images_dir}: run the download stage first")
        lookup, duplicates = _lookup_for(source)
        inputs.append((source, tars, lookup, duplicates))
    per_shard = _samples_per_shard(sources, cfg)
    stats = ShardStats()
    # 8-byte URL digests as Python ints in a set: ~70 bytes per written sample (measured: 70 MB per
    # million), so up to ~2.1 GB for Merged-30M's ~30M URLs, ~1.2 GB for PixelProse's 16.9M.
    seen_urls: set[int] = set()

    def clean() -> Iterator[dict]:
        for source, tars, lookup, _ in inputs:
            for tar in tars:
                complete, cut = 0, False
                for key, parts in iter_raw_samples(tar):
                    out_key = key if source.name is None else f"{source.name}_{key}"
                    if TAR_ERROR in parts:
                        cut = True
                        detail = parts[TAR_ERROR].decode()
                        # every member after the cut is unreadable: count each lost sample, so that
                        # max_bad_fraction judges the real loss, not one sample per broken tar
                        for _ in range(lost_to_truncation(tar, complete)):
                            stats.skip(f"{tar.name}:{out_key}", "truncated_tar", detail)
                        continue
                    complete += 1
                    sample = _clean_sample(out_key, parts, lookup, fmt, stats, seen_urls)
                    if sample is not None:
                        stats.written += 1
                        yield sample
                missing = 0 if cut else lost_at_clean_end(tar, complete)
                for i in range(missing):
                    stats.skip(f"{tar.name}:after-{complete + i}", "truncated_tar",
                               f"the tar ends after {complete} of the {complete + missing} samples its "
                               "_stats.json records")

    with atomic_dir(out_dir) as tmp:
        shards = _write_shards(clean(), tmp, per_shard, prefix)
        bad_fraction = 1.0 - stats.written / stats.seen if stats.seen else 1.0
        if stats.written == 0 or bad_fraction > cfg.max_bad_fraction:
            raise ShardError(
                f"{sum(stats.skipped.values())} of {stats.seen} samples are bad ({bad_fraction:.2%} > "
                f"data.shard.max_bad_fraction={cfg.max_bad_fraction:.2%}); reasons {dict(stats.skipped)}; "
                f"first bad samples: {_first_bad(stats.bad)}. Fix the input, or raise max_bad_fraction if the loss "
                "is acceptable. Nothing was written."
            )
        if len(shards) < cfg.min_shards:
            raise ShardError(
                f"{stats.written} samples make {len(shards)} shard(s) of {per_shard}, fewer than "
                f"data.shard.min_shards={cfg.min_shards} (dataloader workers x ranks): set "
                f"data.shard.samples_per_shard <= {max(1, stats.written // cfg.min_shards)}, or lower "
                "min_shards. Nothing was written."
            )
        manifest = {
            "num_samples": stats.written,
            "num_shards": len(shards),
            "samples_per_shard": per_shard,
            "shards": shards,
            "skipped": dict(sorted(stats.skipped.items())),
            "bad_fraction": round(bad_fraction, 6),
            "duplicate_urls_in_table": sum(d for *_, d in inputs),
            "caption_fields": list(fmt.fields),
        }
        if stats.duplicates:
            manifest["duplicate_urls_dropped"] = stats.duplicates
        if len(sources) > 1 or sources[0].name is not None:
            manifest.update(caption_format=fmt.name, min_shards=cfg.min_shards,
                            sources=[{"name": s.name, "expected": s.expected} for s in sources])
        atomic_write_json(tmp / "manifest.json", manifest)
        atomic_write_json(tmp / "bad_samples.json", stats.bad)
    return manifest


def _first_bad(bad: list[dict[str, str]], shown: int = 3) -> str:
    listed = ", ".join(f"{b['key']} ({b['detail']})" for b in bad[:shown])
    return listed + (f" (+{len(bad) - shown} more)" if len(bad) > shown else "")


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
    """One folder of img2dataset tars + a caption table joined by URL (the synthetic benchmark's layout)
    -> training shards under `out_dir`; returns the manifest."""
    fmt = DREAMLIP
    if url_column != DREAMLIP.url_column or tuple(fields) != DREAMLIP_COLUMNS:
        fmt = CaptionFormat("table", url_column, tuple((f, f) for f in fields), presplit=True)
    source = ShardSource(images_dir=Path(images_dir), fmt=fmt, table=Path(table_path))
    return shard_sources([source], out_dir, ShardConfig(samples_per_shard, max_bad_fraction), prefix)
