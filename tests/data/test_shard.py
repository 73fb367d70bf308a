"""`shard`: byte-identical output, URL join, and bad input skipped, counted, or failed on cleanly."""

from __future__ import annotations

import csv
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
import webdataset as wds

from cosmos.data.shard import ShardError, shard_dataset
from cosmos.data.synthetic.captions import dreamlip_captions
from cosmos.data.synthetic.generate import SplitSizes, write_synthetic_benchmark
from cosmos.data.synthetic.scene import sample_rng, sample_scene


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_data(tmp_path, scene_cfg):
    sizes = SplitSizes(train=30, retrieval=4, classification_per_class=1, segmentation=3, compositional=4,
                       samples_per_tar=10)
    outputs = []
    for run in ("a", "b"):
        raw = tmp_path / run / "raw"
        write_synthetic_benchmark(raw, seed=5, scene=scene_cfg, sizes=sizes)
        shards = tmp_path / run / "shards"
        shard_dataset(raw / "pretrain" / "images", raw / "pretrain" / "annotations.csv", shards, 8)
        outputs.append((_files(raw), _files(shards)))
    assert outputs[0] == outputs[1]
    assert any(name.endswith(".tar") for name in outputs[0][1])
    other = tmp_path / "c" / "raw"
    write_synthetic_benchmark(other, seed=6, scene=scene_cfg, sizes=sizes)
    assert _files(other)["pretrain/images/00000.tar"] != outputs[0][0]["pretrain/images/00000.tar"]


def test_captions_are_joined_by_url_not_row_order(tiny_raw, tiny_shards):
    """The caption table is shuffled on disk; each shard sample must carry its own scene's captions."""
    urls = [r["Image Path"] for r in csv.DictReader(open(tiny_raw / "pretrain" / "annotations.csv"))]
    assert urls != sorted(urls)
    manifest = json.loads((tiny_shards / "manifest.json").read_text())
    for sample in wds.WebDataset([str(tiny_shards / s["file"]) for s in manifest["shards"]], shardshuffle=False):
        index = int(sample["__key__"])
        rng = sample_rng(7, "train", index)
        expected = dreamlip_captions(sample_scene(rng, _cfg()), rng)
        record = json.loads(sample["json"])
        assert record["longSV_captions"] == expected["longSV_captions"]
        assert record["url"].endswith(f"{sample['__key__']}.jpg")


def _cfg():
    from cosmos.data.synthetic.scene import SceneConfig

    return SceneConfig()


def _corrupt(raw: Path, tmp_path: Path, bad_image_keys=(), truncate_keys=(), bad_caption_urls=()) -> Path:
    """A copy of the raw pretrain folder with some images broken and some caption rows malformed."""
    src = raw / "pretrain"
    dst = tmp_path / "pretrain"
    shutil.copytree(src, dst)
    for tar_path in sorted((dst / "images").glob("*.tar")):
        members = []
        with tarfile.open(tar_path) as tf:
            for m in tf:
                members.append((m, tf.extractfile(m).read()))
        with tarfile.open(tar_path, "w") as tf:
            for m, data in members:
                key = m.name.split(".")[0]
                if m.name.endswith(".jpg") and key in bad_image_keys:
                    data = b"this is not an image"
                if m.name.endswith(".jpg") and key in truncate_keys:
                    data = data[: len(data) // 2]
                m.size = len(data)
                tf.addfile(m, io.BytesIO(data))
    rows = list(csv.DictReader(open(dst / "annotations.csv", encoding="utf-8")))
    for row in rows:
        if row["Image Path"] in bad_caption_urls:
            row["longIB_captions"] = ""
    with open(dst / "annotations.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return dst


def test_bad_samples_are_skipped_counted_and_reported(tiny_raw, tmp_path):
    pre = _corrupt(tiny_raw, tmp_path, bad_image_keys={"000000003"}, truncate_keys={"000000010"},
                   bad_caption_urls={"synthetic://train/000000020.jpg"})
    out = tmp_path / "shards"
    manifest = shard_dataset(pre / "images", pre / "annotations.csv", out, 25, max_bad_fraction=0.1)
    assert manifest["num_samples"] == 57
    assert manifest["skipped"] == {"corrupt_image": 2, "malformed_caption": 1}
    bad = {b["key"]: b["reason"] for b in json.loads((out / "bad_samples.json").read_text())}
    assert bad == {"000000003": "corrupt_image", "000000010": "corrupt_image", "000000020": "malformed_caption"}
    keys = [s["__key__"] for s in wds.WebDataset([str(p) for p in sorted(out.glob("*.tar"))], shardshuffle=False)]
    assert len(keys) == 57 and "000000003" not in keys


def test_too_many_bad_samples_fail_and_leave_previous_output(tiny_raw, tmp_path):
    pre = _corrupt(tiny_raw, tmp_path, bad_image_keys={f"{i:09d}" for i in range(10)})
    out = tmp_path / "shards"
    out.mkdir()
    (out / "previous.txt").write_text("kept")
    with pytest.raises(ShardError, match=r"10 of 60 samples are bad .* max_bad_fraction"):
        shard_dataset(pre / "images", pre / "annotations.csv", out, 25, max_bad_fraction=0.05)
    assert [p.name for p in out.iterdir()] == ["previous.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".shards")], "temp output left behind"


def test_missing_caption_column_is_a_clear_error(tiny_raw, tmp_path):
    table = tmp_path / "bad.csv"
    table.write_text("Image Path,raw_caption\nsynthetic://train/000000000.jpg,a thing\n")
    with pytest.raises(ShardError, match="lacks column"):
        shard_dataset(tiny_raw / "pretrain" / "images", table, tmp_path / "out", 10)


def test_non_utf8_caption_is_malformed(tiny_raw, tmp_path):
    pre = _corrupt(tiny_raw, tmp_path)
    text = (pre / "annotations.csv").read_bytes()
    line_start = text.index(b"synthetic://train/000000004.jpg")
    comma = text.index(b",", line_start)
    broken = text[: comma + 1] + b"\xff\xfe bad bytes" + text[comma + 1:]
    (pre / "annotations.csv").write_bytes(broken)
    manifest = shard_dataset(pre / "images", pre / "annotations.csv", tmp_path / "out", 25, max_bad_fraction=0.1)
    assert manifest["skipped"] == {"malformed_caption": 1}


def test_invalid_shard_parameters(tiny_raw, tmp_path):
    with pytest.raises(ValueError, match="samples_per_shard"):
        shard_dataset(tiny_raw / "pretrain" / "images", tiny_raw / "pretrain" / "annotations.csv", tmp_path, 0)
    with pytest.raises(ShardError, match="run the download stage"):
        shard_dataset(tmp_path / "nothing", tiny_raw / "pretrain" / "annotations.csv", tmp_path / "o", 10)


def _cut_first_tar(pre: Path, stats: bool) -> int:
    """Truncate the first tar to a third of its bytes; returns how many samples it held."""
    tar_path = sorted((pre / "images").glob("*.tar"))[0]
    with tarfile.open(tar_path) as tf:
        held = len({Path(m.name).name.split(".")[0] for m in tf if m.isfile()})
    data = tar_path.read_bytes()
    tar_path.write_bytes(data[: len(data) // 3])
    if stats:
        (tar_path.parent / f"{tar_path.stem}_stats.json").write_text(json.dumps({"successes": held}))
    return held


@pytest.mark.parametrize("stats", [True, False])
def test_truncated_tar_counts_every_lost_sample(tiny_raw, tmp_path, stats):
    """Every sample after the cut is bad, not only the one being read: max_bad_fraction judges the real loss."""
    pre = _corrupt(tiny_raw, tmp_path)
    total = sum(1 for _ in open(pre / "annotations.csv", encoding="utf-8")) - 1
    held = _cut_first_tar(pre, stats)
    manifest = shard_dataset(pre / "images", pre / "annotations.csv", tmp_path / "out", 25, max_bad_fraction=0.9)
    lost = manifest["skipped"]["truncated_tar"]
    if stats:
        assert manifest["num_samples"] + lost == total
    else:  # no stats file: the partial sample at least, never nothing
        assert lost >= 1 and manifest["num_samples"] + lost <= total
    assert manifest["num_samples"] >= total - held
    with pytest.raises(ShardError, match="truncated_tar"):
        shard_dataset(pre / "images", pre / "annotations.csv", tmp_path / "out2", 25,
                      max_bad_fraction=(lost - 0.5) / total)


@pytest.mark.parametrize("into_header", [0, 200])
def test_tar_cut_at_a_member_header_is_counted_from_its_stats(tiny_raw, tmp_path, into_header):
    """Python's tarfile ends iteration without an error when the cut falls on a header boundary or inside a
    header: only img2dataset's stats count can tell that samples are missing, and they are counted."""
    pre = _corrupt(tiny_raw, tmp_path)
    total = sum(1 for _ in open(pre / "annotations.csv", encoding="utf-8")) - 1
    tar_path = sorted((pre / "images").glob("*.tar"))[0]
    with tarfile.open(tar_path) as tf:
        members = [m for m in tf if m.isfile()]
    held = len({Path(m.name).name.split(".")[0] for m in members})
    third_key = Path(members[4].name).name.split(".")[0]  # members come as (jpg, json) pairs: the 3rd sample
    assert Path(members[5].name).name.split(".")[0] == third_key
    tar_path.write_bytes(tar_path.read_bytes()[: members[4].offset + into_header])
    (tar_path.parent / f"{tar_path.stem}_stats.json").write_text(json.dumps({"successes": held}))
    manifest = shard_dataset(pre / "images", pre / "annotations.csv", tmp_path / "out", 25, max_bad_fraction=0.9)
    assert manifest["skipped"] == {"truncated_tar": held - 2}, manifest["skipped"]
    assert manifest["num_samples"] == total - (held - 2)


def test_tar_cut_before_its_first_member_is_counted(tiny_raw, tmp_path):
    pre = _corrupt(tiny_raw, tmp_path)
    tar_path = sorted((pre / "images").glob("*.tar"))[0]
    tar_path.write_bytes(tar_path.read_bytes()[:100])
    manifest = shard_dataset(pre / "images", pre / "annotations.csv", tmp_path / "out", 25, max_bad_fraction=0.9)
    assert manifest["skipped"].get("truncated_tar", 0) >= 1


def test_shard_output_has_ordinary_permissions(tiny_shards, tmp_path):
    """The atomically swapped-in folder is made by mkdtemp (0700); it must read like any folder the umask makes."""
    plain = tmp_path / "plain"
    plain.mkdir()
    assert (tiny_shards.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777)
