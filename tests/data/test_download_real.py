"""`download` + `shard` for the real data sets, end to end through the real code (img2dataset included) against
a loopback HTTP server: broken URLs and payloads are counted by reason, every image keeps the captions of
its own URL, an interrupted download resumes without loss or duplicates, too many failures stop the run
with a report, PixelProse and Merged-30M-style concatenation work, and the DVC stage scripts run."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
import yaml
from PIL import Image

from cosmos.config.compose import compose_params
from cosmos.config.params import download_config, shard_config, web_sources
from cosmos.data.captions import caption_format
from cosmos.data.download.config import DownloadConfig, SourceConfig, expected_images
from cosmos.data.download.pipeline import download_web_dataset
from cosmos.data.download.scrape import DownloadError, failure_reason, img2dataset_python
from cosmos.data.formats.dreamlip import DREAMLIP_COLUMNS
from cosmos.data.shard import ShardConfig, ShardSource, shard_sources
from tests.conftest import REPO_ROOT

GOOD = 10          # images 0..9 download and shard
BAD_CAPTION = (10, 11)  # images that exist, but whose caption rows are empty / not UTF-8: never fetched
BROKEN = {"missing.jpg": "http_404", "hang.jpg": "timeout", "corrupt.jpg": "not_an_image",
          "truncated.png": "not_an_image", "page.html": "not_an_image"}


def _colour(i: int) -> tuple[int, int, int]:
    return ((i * 97) % 256, (i * 59 + 40) % 256, (200 - i * 71) % 256)


def _image_bytes(i: int, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 40), _colour(i)).save(buf, format=fmt)
    return buf.getvalue()


def _payloads() -> dict[str, bytes]:
    files = {f"img{i}.{'png' if i % 2 else 'jpg'}": _image_bytes(i, "PNG" if i % 2 else "JPEG")
             for i in range(GOOD + len(BAD_CAPTION))}
    png = _image_bytes(99, "PNG")
    files.update({"corrupt.jpg": b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4, "truncated.png": png[: len(png) // 2],
                  "page.html": b"<html><body>no image here</body></html>"})
    return files


class _Handler(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    hits: Counter = Counter()
    delay = 0.05

    def do_GET(self):  # noqa: N802 (http.server API)
        name = self.path.lstrip("/")
        type(self).hits[name] += 1
        if name == "hang.jpg":
            time.sleep(6)  # longer than the 2 s timeout, which leaves a loaded machine room for the good images
        time.sleep(self.delay)
        data = self.files.get(name)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html" if name.endswith("html") else "image/jpeg")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (the timeout case)
            pass

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    _Handler.files = _payloads()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _url(base: str, i: int) -> str:
    return f"{base}/img{i}.{'png' if i % 2 else 'jpg'}"


def _captions(i: int) -> dict[str, str]:
    return {
        "raw_caption": f"photo {i}",
        "shortIB_captions": f"Item {i} in one colour.",
        "longIB_captions": f"This is item {i}. It has a flat colour.\nNothing else is visible.",
        "shortSV_captions": f"A flat picture of item {i}.",
        "longSV_captions": f"The picture shows item {i}</s>It is one colour",
        "shortLLA_captions": f"Item {i}.",
        "longLLA_captions": f"Item {i} fills the frame. There is no text.",
    }


def _write_dreamlip_csv(path: Path, base: str, ids: range | list[int] = range(GOOD), broken: bool = True) -> None:
    """The DreamLIP layout, rows shuffled, with a duplicate, an empty and a non-UTF-8 caption row."""
    rows = [(_url(base, i), _captions(i)) for i in ids]
    rows.append((_url(base, ids[0]), _captions(ids[0])))  # duplicate URL
    if broken:
        rows += [(f"{base}/{name}", _captions(100 + k)) for k, name in enumerate(BROKEN)]
        empty = _captions(10) | {"longSV_captions": " . "}
        rows += [(_url(base, 10), empty), (_url(base, 11), _captions(11) | {"raw_caption": "\udce9t\u00e9 11"})]
    random.Random(0).shuffle(rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["Image Path", *DREAMLIP_COLUMNS])
    for url, caps in rows:
        writer.writerow([url, *(caps[c] for c in DREAMLIP_COLUMNS)])
    # Latin-1 bytes for the lone surrogate: the file is UTF-8 except for that one caption.
    path.write_bytes(buf.getvalue().encode("utf-8", "surrogateescape"))


def _cfg(work: Path, **overrides) -> DownloadConfig:
    settings = dict(work_dir=str(work), rows_per_part=7, image_size=32, resize_mode="keep_ratio",
                    samples_per_tar=4, processes_count=1, thread_count=4, timeout=2, retries=0,
                    max_failed_fraction=0.6, min_checked=1000, max_table_bad_fraction=0.2, poll_seconds=0.2)
    return DownloadConfig(**(settings | overrides))


def _read_tars(folder: Path) -> list[dict]:
    tars = sorted(str(p) for p in folder.glob("*.tar"))
    return [{"key": s["__key__"], "json": json.loads(s["json"]), "jpg": s["jpg"]}
            for s in wds.WebDataset(tars, shardshuffle=False)]


def _image_id(jpg: bytes) -> int:
    mean = np.asarray(Image.open(io.BytesIO(jpg)).convert("RGB"), dtype=float).reshape(-1, 3).mean(0)
    distances = [np.abs(mean - np.array(_colour(i))).sum() for i in range(GOOD + len(BAD_CAPTION))]
    return int(np.argmin(distances))


def _check_training_shards(shards: Path, base: str, n: int = GOOD) -> list[dict]:
    manifest = json.loads((shards / "manifest.json").read_text())
    samples = _read_tars(shards)
    assert manifest["num_samples"] == len(samples) == n
    assert sorted(s["json"]["url"] for s in samples) == sorted(_url(base, i) for i in range(n))
    for sample in samples:
        i = _image_id(sample["jpg"])  # the colour the server drew for image i ...
        record = sample["json"]
        assert record["url"] == _url(base, i)  # ... sits with its own URL ...
        assert record["longIB_captions"] == [f"This is item {i}", "It has a flat colour", "Nothing else is visible"]
        assert record["longSV_captions"] == [f"The picture shows item {i}", "It is one colour"]
        assert all(isinstance(record[c], list) and record[c] for c in DREAMLIP_COLUMNS)  # ... and its captions
    return samples


def test_failure_messages_map_to_reasons():
    assert failure_reason("HTTP Error 404: Not Found") == "http_404"
    assert failure_reason("<urlopen error timed out>") == "timeout"
    assert failure_reason("The read operation timed out") == "timeout"
    assert failure_reason("Image decoding error") == "not_an_image"
    assert failure_reason("<urlopen error [Errno 111] Connection refused>") == "connection_error"
    assert failure_reason("something new") == "other"


def test_img2dataset_is_installed():
    """scripts/bootstrap.sh puts img2dataset in .venv/img2dataset; the tests below run the real thing."""
    python = img2dataset_python()
    out = subprocess.run([python, "-c", "import img2dataset, webdataset; print(webdataset.__version__)"],
                         capture_output=True, text=True, env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})
    assert out.returncode == 0, out.stderr


def test_interrupted_download_resumes_without_loss_or_duplicates(server, tmp_path, monkeypatch):
    tables = tmp_path / "tables"
    tables.mkdir()
    _write_dreamlip_csv(tables / "cc3m_3long_3short_1raw_captions_url.csv", server)
    sources = {"cc3m_recap": SourceConfig(format="dreamlip", files=("cc3m_*_url.csv",), local_path=str(tables))}
    cfg, raw = _cfg(tmp_path / "work"), tmp_path / "raw"
    images = tmp_path / "work" / "cc3m_recap" / "images"
    _Handler.hits.clear()

    class Interrupt(Exception):
        pass

    def interrupt(summary):
        if summary.shards:
            raise Interrupt

    with pytest.raises(Interrupt):
        download_web_dataset(sources, cfg, raw, on_progress=interrupt)
    finished = sorted(p.name.split("_")[0] for p in images.glob("*_stats.json"))
    # 15 usable rows in url-list parts of 7 + 7 + 1 rows -> img2dataset shards of 4 + 3, 4 + 3, 1.
    assert 1 <= len(finished) < 5 and not raw.exists()
    # A shard killed while being written: a tar without its stats file, which the re-run must redo.
    first_missing = next(f"{i:05d}" for i in range(5) if f"{i:05d}" not in finished)
    (images / f"{first_missing}.tar").write_bytes(b"partial tar")
    done_urls = {u for f in finished for u in pq.read_table(images / f"{f}.parquet")["url"].to_pylist()}

    def no_fetch(*args):
        raise AssertionError("a resumed run reuses the tables of its url list (no Hub access)")

    monkeypatch.setattr("cosmos.data.download.pipeline.fetch_annotations", no_fetch)

    summary = download_web_dataset(sources, cfg, raw)

    report = json.loads((raw / "pretrain" / "cc3m_recap" / "download_report.json").read_text())
    assert report["table"] == {"rows": 18, "kept": 15, "skipped": {"duplicate_url": 1, "empty_caption": 1,
                                                                    "non_utf8_caption": 1}}
    assert report["images"]["count"] == 15 and report["images"]["successes"] == GOOD
    expected_reasons = Counter(BROKEN.values())
    assert report["images"]["reasons"] == dict(expected_reasons)
    assert len(report["images"]["shards"]) == 5 and all("successes" in s for s in report["images"]["shards"])
    assert summary["sources"]["cc3m_recap"]["images"] == GOOD and expected_images(raw, "cc3m_recap") == GOOD
    # Rows with bad captions were never fetched; images of shards finished before the interruption were
    # fetched once (the re-run resumed, it did not start over).
    assert all(_Handler.hits[f"img{i}.{'png' if i % 2 else 'jpg'}"] == 0 for i in BAD_CAPTION)
    assert done_urls and all(_Handler.hits[u.rsplit("/", 1)[1]] == 1 for u in done_urls)
    raw_samples = _read_tars(raw / "pretrain" / "cc3m_recap" / "images")
    urls = [s["json"]["url"] for s in raw_samples]
    assert len(urls) == len(set(urls)) == GOOD  # no loss, no duplicates
    assert sorted(urls) == sorted(_url(server, i) for i in range(GOOD))

    shards = tmp_path / "shards"
    source = ShardSource(raw / "pretrain" / "cc3m_recap" / "images", fmt=caption_format("dreamlip"),
                         name="cc3m_recap", expected=GOOD)
    manifest = shard_sources([source], shards, ShardConfig(samples_per_shard=4, max_bad_fraction=0.0, min_shards=5))
    assert manifest["num_shards"] == 5 and manifest["samples_per_shard"] == 2  # sized down for min_shards
    samples = _check_training_shards(shards, server)
    assert all(s["key"].startswith("cc3m_recap_") for s in samples)
    assert all(len(s["sha256"]) == 64 for s in manifest["shards"])

    # Merged-30M style: a second source listing the same images adds nothing (URLs seen before are dropped).
    merged = shard_sources([source, ShardSource(source.images_dir, fmt=source.fmt, name="again", expected=GOOD)],
                           tmp_path / "merged", ShardConfig(samples_per_shard=3))
    assert merged["num_samples"] == GOOD and merged["duplicate_urls_dropped"] == GOOD
    assert [s["name"] for s in merged["sources"]] == ["cc3m_recap", "again"]


def test_too_many_failures_stop_with_a_report(server, tmp_path):
    tables = tmp_path / "tables"
    tables.mkdir()
    _write_dreamlip_csv(tables / "t.csv", server)
    sources = {"cc3m_recap": SourceConfig(format="dreamlip", files=("t.csv",), local_path=str(tables))}
    cfg = _cfg(tmp_path / "work", max_failed_fraction=0.2, min_checked=1)
    with pytest.raises(DownloadError, match=r"max_failed_fraction=20.0%.*by reason .*(not_an_image|http_404)"):
        download_web_dataset(sources, cfg, tmp_path / "raw")
    report = json.loads((tmp_path / "work" / "cc3m_recap" / "download_report.json").read_text())
    assert report["images"]["failed_fraction"] > 0.2 and report["images"]["reasons"]
    assert not (tmp_path / "raw").exists()


def test_pixelprose_parquet_downloads_and_shards_with_string_captions(server, tmp_path):
    tables = tmp_path / "tables" / "data"
    tables.mkdir(parents=True)
    ids = [3, 0, 2, 1]
    table = {"uid": [f"u{i}" for i in ids], "url": [_url(server, i) for i in ids],
             "key": [str(i) for i in ids], "status": ["success"] * 4,
             "original_caption": [f"alt text {i}" for i in ids], "vlm_model": ["gemini-pro-vision"] * 4,
             "vlm_caption": [f"This image shows item {i}. The colour is flat." for i in ids]}
    table["url"].append(f"{server}/missing.jpg")
    for column, value in (("uid", "u404"), ("key", "404"), ("status", "success"), ("original_caption", "gone"),
                          ("vlm_model", "g"), ("vlm_caption", "Nothing. Here.")):
        table[column].append(value)
    pq.write_table(pa.table(table), tables / "vlm_captions_cc12m_00.parquet")
    sources = {"pixelprose": SourceConfig(format="pixelprose", files=("data/vlm_captions_*.parquet",),
                                          local_path=str(tables.parent))}
    raw = tmp_path / "raw"
    summary = download_web_dataset(sources, _cfg(tmp_path / "work"), raw)
    assert summary["sources"]["pixelprose"]["failure_reasons"] == {"http_404": 1}
    shards = tmp_path / "shards"
    shard_sources([ShardSource(raw / "pretrain" / "pixelprose" / "images", fmt=caption_format("pixelprose"),
                               name="pixelprose")], shards, ShardConfig(samples_per_shard=10))
    samples = _read_tars(shards)
    assert len(samples) == 4
    for sample in samples:
        i = _image_id(sample["jpg"])
        assert sample["json"] == {"url": _url(server, i), "original_caption": f"alt text {i}",
                                  "caption": f"This image shows item {i}. The colour is flat."}


def test_annotations_come_from_the_hub_with_allow_patterns(tmp_path, monkeypatch):
    """The Hub path with the repo, revision and file patterns of the config: the revision is resolved to
    a commit, then snapshot_download fetches at that commit (tests/data/test_hub_loopback.py runs the real
    client against a loopback Hub)."""
    import huggingface_hub

    from cosmos.data.download.annotations import fetch_annotations

    calls, commit = [], "c0ffee" * 6 + "abcd"

    class FakeApi:
        def repo_info(self, **kwargs):
            calls.append(kwargs)
            return SimpleNamespace(sha=commit)

    def fake_snapshot_download(**kwargs):
        calls.append(kwargs)
        folder = Path(kwargs["local_dir"])
        folder.mkdir(parents=True)
        (folder / "cc3m_3long_3short_1raw_captions_url.csv").write_text("Image Path\n")
        (folder / ".cache").mkdir()
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    params = yaml.safe_load(compose_params(["data=cc3m_recap"]))
    source = web_sources(params["data"])["cc3m_recap"]
    files = fetch_annotations(source, tmp_path / "annotations")
    assert [f.name for f in files] == ["cc3m_3long_3short_1raw_captions_url.csv"]
    repo = {"repo_id": "qidouxiong619/dreamlip_long_captions", "repo_type": "dataset"}
    assert calls == [repo | {"revision": "main"},
                     repo | {"revision": commit, "allow_patterns": ["cc3m_3long_3short_1raw_captions_url.csv"],
                             "local_dir": str(tmp_path / "annotations")}]


@pytest.mark.parametrize("name", ["cc3m_recap", "cc12m_recap", "yfcc15m_recap", "merged30m", "pixelprose"])
def test_real_data_configs_compose_and_validate(name):
    data = yaml.safe_load(compose_params([f"data={name}"]))["data"]
    sources = web_sources(data)
    download_config(data)
    cfg = shard_config(data)
    assert cfg.min_shards >= 64 and data["generator"] is None and data["download"]["work_dir"].startswith(data["root"])
    if name == "merged30m":
        assert list(sources) == ["cc3m_recap", "cc12m_recap", "yfcc15m_recap"]
        dropped = yaml.safe_load(compose_params([f"data={name}", "data.sources.yfcc15m_recap=null"]))["data"]
        assert list(web_sources(dropped)) == ["cc3m_recap", "cc12m_recap"]
    for source in sources.values():
        caption_format(source.format)


def test_download_and_shard_stages_run_on_real_data_config(server, tmp_path):
    """`python stages/download.py` and `stages/shard.py` with a params.yaml composed for data=cc3m_recap."""
    tables = tmp_path / "tables"
    tables.mkdir()
    _write_dreamlip_csv(tables / "cc3m_3long_3short_1raw_captions_url.csv", server)
    overrides = ["data=cc3m_recap", f"data.root={tmp_path / 'data'}",
                 f"data.sources.cc3m_recap.local_path={tables}", "data.download.samples_per_tar=4",
                 "data.download.processes_count=1", "data.download.thread_count=4", "data.download.timeout=2",
                 "data.download.retries=0", "data.download.max_failed_fraction=0.6", "data.download.image_size=32",
                 "data.download.max_table_bad_fraction=0.2",
                 "data.download.poll_seconds=0.2", "data.shard.samples_per_shard=3", "data.shard.min_shards=4",
                 "data.shard.max_bad_fraction=0"]
    (tmp_path / "params.yaml").write_text(compose_params(overrides))
    for stage in ("download", "shard"):
        proc = subprocess.run([sys.executable, str(REPO_ROOT / "stages" / f"{stage}.py")], cwd=tmp_path,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    metrics = json.loads((tmp_path / "reports" / "metrics" / "download.json").read_text())
    assert metrics["dataset"] == "cc3m_recap" and metrics["images"] == GOOD
    assert metrics["sources"]["cc3m_recap"]["failure_reasons"] == dict(Counter(BROKEN.values()))
    shard_metrics = json.loads((tmp_path / "reports" / "metrics" / "shard.json").read_text())
    assert shard_metrics["num_samples"] == GOOD and shard_metrics["num_shards"] == 4  # 3 per shard
    _check_training_shards(tmp_path / "data" / "shards", server)
    assert (tmp_path / "data" / "raw" / "run_info.json").exists()


def test_unknown_download_key_is_named():
    data = yaml.safe_load(compose_params(["data=cc3m_recap"]))["data"]
    data["download"]["threads"] = 8
    with pytest.raises(ValueError, match=r"data.download: unknown key\(s\) \['threads'\]"):
        download_config(data)
    data = yaml.safe_load(compose_params(["data=cc3m_recap", "data.download.resize_mode=stretch"]))["data"]
    with pytest.raises(ValueError, match="resize_mode='stretch'"):
        download_config(data)
