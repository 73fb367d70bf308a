"""The guards of a resumable real-data download, with img2dataset stubbed for speed (the real thing runs in
test_download_real.py): finished shards are never mixed with shards of another url list or other settings,
a run stopped for failures can be resumed, a killed run stops img2dataset, two runs cannot share a folder,
and the url-list and config edge cases."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from cosmos.config.compose import compose_params
from cosmos.config.params import web_sources
from cosmos.data.captions import caption_format
from cosmos.data.download.config import DownloadConfig, SourceConfig
from cosmos.data.download.guard import FINGERPRINT, LOCK
from cosmos.data.download.pipeline import download_web_dataset
from cosmos.data.download.scrape import ENV_PYTHON, DownloadError, img2dataset_python, read_shard_stats, scrape
from cosmos.data.download.urllist import build_url_list
from tests.conftest import REPO_ROOT

# Stands in for img2dataset's Python: like `incremental_mode="incremental"`, it writes the shards of
# plan.json (next to its kwargs file) that have no stats yet, stats last, then sleeps.
FAKE_IMG2DATASET = f"""#!{sys.executable}
import json, os, pathlib, sys, time
kwargs_path = pathlib.Path(sys.argv[2])
out = pathlib.Path(json.loads(kwargs_path.read_text())["output_folder"])
out.mkdir(parents=True, exist_ok=True)
plan = json.loads((kwargs_path.parent / "plan.json").read_text())
(kwargs_path.parent / "fake.pid").write_text(str(os.getpid()))
for shard, stats in plan["shards"].items():
    if not (out / f"{{shard}}_stats.json").exists():
        (out / f"{{shard}}.tar").write_bytes(b"tar")
        (out / f"{{shard}}.parquet").write_bytes(b"parquet")
        (out / f"{{shard}}_stats.json").write_text(json.dumps(stats))
time.sleep(plan.get("sleep", 0))
"""


def _stats(count: int, failures: dict[str, int] | None = None) -> dict:
    failed = sum((failures or {}).values())
    return {"count": count, "successes": count - failed, "failed_to_download": failed, "failed_to_resize": 0,
            "status_dict": {"success": count - failed, **(failures or {})}}


def _fake(tmp_path: Path) -> str:
    path = tmp_path / "fake_python"
    path.write_text(FAKE_IMG2DATASET)
    path.chmod(0o755)
    return str(path)


def _cfg(tmp_path: Path, **overrides) -> DownloadConfig:
    settings = dict(work_dir=str(tmp_path / "work"), rows_per_part=4, image_size=32, samples_per_tar=4,
                    processes_count=1, thread_count=2, max_failed_fraction=0.5, min_checked=1, poll_seconds=0.1,
                    max_table_bad_fraction=0.5, img2dataset_python=_fake(tmp_path))
    return DownloadConfig(**(settings | overrides))


def _plan(run_dir: Path, shards: dict[str, dict], sleep: float = 0) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "plan.json").write_text(json.dumps({"shards": shards, "sleep": sleep}))


def _write_table(path: Path, urls: list[str], captions: list[str] | None = None) -> None:
    captions = captions or [f"Item {i}. It is flat." for i in range(len(urls))]
    pq.write_table(pa.table({"url": urls, "original_caption": [f"alt {i}" for i in range(len(urls))],
                             "vlm_caption": captions}), path)


# ---- 1, 2: fingerprint of the finished shards ------------------------------------------------------------

@pytest.fixture
def one_source(tmp_path, monkeypatch):
    """A PixelProse-layout source of 6 URLs, downloaded once by an in-process img2dataset stub that writes
    one finished shard per run (no network)."""
    tables = tmp_path / "tables"
    tables.mkdir()
    _write_table(tables / "t.parquet", [f"http://127.0.0.1:9/img{i}.jpg" for i in range(6)])

    def fake_scrape(url_dir, images_dir, columns, cfg, log_path, on_progress=None):
        kept = json.loads((Path(url_dir) / "manifest.json").read_text())["kept"]
        Path(images_dir).mkdir(parents=True, exist_ok=True)
        (Path(images_dir) / "00000_stats.json").write_text(json.dumps(_stats(kept)))
        return read_shard_stats(images_dir)

    monkeypatch.setattr("cosmos.data.download.pipeline.scrape", fake_scrape)
    sources = {"pp": SourceConfig(format="pixelprose", files=("t.parquet",), local_path=str(tables))}
    download_web_dataset(sources, _cfg(tmp_path), tmp_path / "raw")
    return sources, tables / "t.parquet", tmp_path / "work" / "pp"


def test_changed_caption_table_is_refused_on_every_run_and_the_url_list_kept(one_source, tmp_path):
    sources, table, work = one_source
    assert (work / "images" / FINGERPRINT).exists()
    _write_table(table, [f"http://127.0.0.1:9/img{i}.jpg" for i in range(7)])  # one more row
    for _ in range(2):  # the refusal does not wear off: the reference lives in images/, not urls/
        with pytest.raises(DownloadError, match=r"caption tables .*delete .*images"):
            download_web_dataset(sources, _cfg(tmp_path), tmp_path / "raw")
    assert json.loads((work / "urls" / "manifest.json").read_text())["kept"] == 6  # not rebuilt
    _write_table(table, [f"http://127.0.0.1:9/img{i}.jpg" for i in range(6)])  # back: resumes
    assert download_web_dataset(sources, _cfg(tmp_path), tmp_path / "raw")["images"] == 6


def test_same_size_table_with_other_content_is_refused_once_the_url_list_is_rebuilt(one_source, tmp_path):
    sources, table, work = one_source
    _write_table(table, [f"http://127.0.0.1:9/img{i}.jpg" for i in (0, 1, 2, 3, 5, 4)])  # same bytes count
    shutil.rmtree(work / "urls")
    for _ in range(2):
        with pytest.raises(DownloadError, match=r"the url list \(its parts' sha256"):
            download_web_dataset(sources, _cfg(tmp_path), tmp_path / "raw")


@pytest.mark.parametrize("setting, value, name", [
    ("samples_per_tar", 5, r"data.download.samples_per_tar: 4 -> 5"),
    ("image_size", 64, r"data.download.image_size: 32 -> 64"),
    ("resize_mode", "center_crop", r"data.download.resize_mode: 'keep_ratio' -> 'center_crop'"),
    ("rows_per_part", 3, r"data.download.rows_per_part: 4 -> 3"),
])
def test_changed_shard_settings_are_refused_naming_the_setting(one_source, tmp_path, setting, value, name):
    sources, _, _ = one_source
    with pytest.raises(DownloadError, match=name):
        download_web_dataset(sources, _cfg(tmp_path, **{setting: value}), tmp_path / "raw")


def test_finished_shards_without_a_fingerprint_are_refused(one_source, tmp_path):
    sources, _, work = one_source
    (work / "images" / FINGERPRINT).unlink()
    with pytest.raises(DownloadError, match=rf"no {FINGERPRINT}.*delete {work / 'images'}"):
        download_web_dataset(sources, _cfg(tmp_path), tmp_path / "raw")


# ---- 3: a run stopped for failures can be resumed --------------------------------------------------------

def test_failure_rate_is_judged_on_the_shards_of_this_run(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "00000_stats.json").write_text(json.dumps(_stats(10, {"HTTP Error 404: Not Found": 10})))
    _plan(tmp_path, {"00001": _stats(10), "00002": _stats(10)})
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)
    # 10 of 30 failed overall (> 30%), but none of the 20 fetched by this run.
    summary = scrape(tmp_path / "urls", images, ("c",), _cfg(tmp_path, max_failed_fraction=0.3),
                     tmp_path / "log")
    assert summary.count == 30 and summary.successes == 20
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)) == before  # restored


def test_a_resume_smaller_than_min_checked_is_judged_with_the_kept_shards(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for shard in ("00000", "00001"):
        (images / f"{shard}_stats.json").write_text(json.dumps(_stats(10)))
    _plan(tmp_path, {"00002": _stats(1, {"<urlopen error timed out>": 1})})
    # The one URL this run tried failed (100%), but 1 of 21 is within the limit.
    summary = scrape(tmp_path / "urls", images, ("c",), _cfg(tmp_path, min_checked=5), tmp_path / "log")
    assert summary.count == 21 and summary.successes == 20

    (images / "00000_stats.json").write_text(json.dumps(_stats(10, {"HTTP Error 404: Not Found": 10})))
    (images / "00002_stats.json").unlink()
    with pytest.raises(DownloadError, match=r"11 of the 21 image downloads of this run and the shards kept"):
        scrape(tmp_path / "urls", images, ("c",), _cfg(tmp_path, min_checked=5), tmp_path / "log")


def test_stop_moves_network_failures_aside_and_a_rerun_fetches_them(tmp_path):
    images = tmp_path / "images"
    _plan(tmp_path, {"00000": _stats(10), "00001": _stats(10, {"<urlopen error timed out>": 10}),
                     "00002": _stats(10, {"HTTP Error 404: Not Found": 8})}, sleep=60)
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"18 of the 30 .*Moved the 1 shard\(s\) \['00001'\].*failed-"):
        scrape(tmp_path / "urls", images, ("c",), _cfg(tmp_path), tmp_path / "log")
    assert time.monotonic() - start < 30  # stopped in the loop, not after the fake's sleep
    (aside,) = images.glob("failed-*")
    assert sorted(p.name for p in aside.iterdir()) == ["00001.parquet", "00001.tar", "00001_stats.json"]
    assert sorted(p.name for p in images.glob("*_stats.json")) == ["00000_stats.json", "00002_stats.json"]

    _plan(tmp_path, {"00001": _stats(10)})  # the network is back
    summary = scrape(tmp_path / "urls", images, ("c",), _cfg(tmp_path), tmp_path / "log")
    assert [s["shard"] for s in summary.shards] == ["00000", "00001", "00002"] and summary.successes == 22


# ---- 4: a killed run stops img2dataset; one run per folder -----------------------------------------------

def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_terminated_download_stops_img2dataset(tmp_path, sig):
    _plan(tmp_path, {}, sleep=60)
    script = (f"from pathlib import Path\nfrom cosmos.data.download.config import DownloadConfig\n"
              f"from cosmos.data.download.scrape import scrape\n"
              f"scrape(Path({str(tmp_path / 'urls')!r}), Path({str(tmp_path / 'images')!r}), ('c',), "
              f"DownloadConfig(work_dir='w', img2dataset_python={_fake(tmp_path)!r}, poll_seconds=0.1), "
              f"Path({str(tmp_path / 'log')!r}))\n")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT)
    pid_file = tmp_path / "fake.pid"
    try:
        deadline = time.monotonic() + 30
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        fake_pid = int(pid_file.read_text())
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 128 + sig
        assert not _alive(fake_pid), "img2dataset outlived the killed download"
    finally:
        proc.kill()
        if pid_file.exists() and _alive(int(pid_file.read_text())):
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)


def test_second_download_on_the_same_folder_is_refused(tmp_path):
    tables = tmp_path / "tables"
    tables.mkdir()
    _write_table(tables / "t.parquet", ["http://127.0.0.1:9/a.jpg"])
    sources = {"pp": SourceConfig(format="pixelprose", files=("t.parquet",), local_path=str(tables))}
    work = tmp_path / "work" / "pp"
    work.mkdir(parents=True)
    with open(work / LOCK, "a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(DownloadError, match=rf"another download is running on {work}"):
            download_web_dataset(sources, _cfg(tmp_path), tmp_path / "raw")
    assert not (work / "urls").exists()


# ---- 6, 7: url-list and config edge cases ----------------------------------------------------------------

def test_an_unusable_row_does_not_hide_a_later_usable_row_of_the_same_url(tmp_path):
    table = tmp_path / "t.parquet"
    _write_table(table, ["http://h/1", "http://h/1", "http://h/2", "http://h/2", "http://h/3", "http://h/3"],
                 [" . ", "One. Good.", "Two.", "Two again.", "Three.", ""])
    manifest = build_url_list([table], caption_format("pixelprose"), tmp_path / "urls", 10, 1.0)
    assert manifest["kept"] == 3 and manifest["skipped"] == {"duplicate_url": 1, "empty_caption": 2}
    rows = pq.read_table(tmp_path / "urls" / "part-00000.parquet").to_pylist()
    assert [(r["url"], r["vlm_caption"]) for r in rows] == [("http://h/1", "One. Good."), ("http://h/2", "Two."),
                                                            ("http://h/3", "Three.")]


def test_a_single_file_pattern_given_as_a_string_is_one_pattern():
    data = yaml.safe_load(compose_params(["data=pixelprose", "data.sources.pixelprose.files=foo.parquet"]))
    assert web_sources(data["data"])["pixelprose"].files == ("foo.parquet",)


def test_a_missing_img2dataset_python_is_an_error_naming_it(tmp_path, monkeypatch):
    missing = str(tmp_path / "nowhere" / "python")
    with pytest.raises(DownloadError, match=rf"data.download.img2dataset_python={missing} does not exist"):
        img2dataset_python(missing)
    monkeypatch.setenv(ENV_PYTHON, missing)
    with pytest.raises(DownloadError, match=rf"\${ENV_PYTHON}={missing} does not exist"):
        img2dataset_python()
