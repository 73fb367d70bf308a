"""The webdataset loader: equal batches per rank, seeded order, nested data fractions, exact skip, bad samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import webdataset as wds

from cosmos.training.data import TrainLoader, read_shard_set


def _transform(image, record):
    return record["url"], torch.rand(()).item()  # the draw shows the per-sample RNG seeding


def _collate(samples):
    return {"urls": [u for u, _ in samples], "draws": torch.tensor([d for _, d in samples])}


def _loader(shards, batch=8, world=1, rank=0, workers=0, seed=0, fraction=1.0):
    return TrainLoader(read_shard_set(shards, fraction), _transform, _collate, global_batch=batch, seed=seed,
                       rank=rank, world_size=world, num_workers=workers, shuffle_buffer=16, shuffle_initial=4)


def _epoch(loader, epoch=0, skip=0):
    return [(b["urls"], b["draws"]) for b in loader.epoch(epoch, skip)]


def test_every_rank_gets_the_same_number_of_full_batches(tiny_shards):
    loaders = [_loader(tiny_shards, batch=16, world=2, rank=r) for r in range(2)]
    epochs = [_epoch(loader) for loader in loaders]
    assert [len(e) for e in epochs] == [60 // 16] * 2
    assert all(len(urls) == 8 for e in epochs for urls, _ in e)
    # ranks read disjoint shards; the rank with fewer samples (1 shard of 20 < 3x8) cycles its own
    rank0, rank1 = ({u for urls, _ in e for u in urls} for e in epochs)
    assert not rank0 & rank1 and len(rank1) <= 20


def test_order_is_seeded_per_epoch_and_independent_of_the_caller_rng(tiny_shards):
    loader = _loader(tiny_shards)
    first = _epoch(loader, 0)
    torch.manual_seed(123)
    again = _epoch(loader, 0)
    assert [u for u, _ in first] == [u for u, _ in again]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(first, again))
    assert [u for u, _ in _epoch(loader, 1)] != [u for u, _ in first]
    assert [u for u, _ in _epoch(_loader(tiny_shards, seed=1), 0)] != [u for u, _ in first]


@pytest.mark.parametrize("workers", [0, 2])
def test_skipping_batches_gives_exactly_the_rest_of_the_epoch(tiny_shards, workers):
    loader = _loader(tiny_shards, workers=workers)
    full = _epoch(loader, 1)
    rest = _epoch(loader, 1, skip=3)
    assert len(full) == 60 // 8 and len(rest) == len(full) - 3
    for (urls, draws), (urls2, draws2) in zip(full[3:], rest):
        assert urls == urls2 and torch.equal(draws, draws2)


def test_data_fraction_uses_a_deterministic_prefix(tiny_shards):
    manifest = json.loads((tiny_shards / "manifest.json").read_text())
    half = read_shard_set(tiny_shards, 0.5)
    assert half.num_samples == manifest["num_samples"] // 2
    assert [Path(p).name for p, _ in half.shards] == [s["file"] for s in manifest["shards"]][: len(half.shards)]
    loader = _loader(tiny_shards, fraction=0.5)
    assert len(loader) == 30 // 8
    # the partially read shard stops at its cut: only the first 30 samples ever appear, even when cycling
    allowed = set()
    for path, take in half.shards:
        allowed |= {json.loads(s["json"])["url"] for s in list(wds.WebDataset(path, shardshuffle=False))[:take]}
    for epoch in range(3):
        assert {u for urls, _ in _epoch(loader, epoch) for u in urls} <= allowed


def test_corrupt_samples_are_skipped_and_counted(tiny_shards, tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    good = list(wds.WebDataset(str(next(tiny_shards.glob("train-*.tar"))), shardshuffle=False))[:5]
    with wds.TarWriter(str(shards / "train-bad.tar")) as sink:
        for i, sample in enumerate(good):
            payload = b"not a jpeg" if i % 2 == 0 else sample["jpg"]
            sink.write({"__key__": f"s{i}", "jpg": payload, "json": json.dumps({"url": f"s{i}"}).encode()})
    manifest = {"num_samples": 5, "shards": [{"file": "train-bad.tar", "samples": 5}]}
    (shards / "manifest.json").write_text(json.dumps(manifest))
    batches = list(_loader(shards, batch=2).epoch(0))
    assert len(batches) == 5 // 2
    assert {u for b in batches for u in b["urls"]} <= {"s1", "s3"}
    assert batches[-1]["bad_samples"] >= 3  # 4 good samples need more than one pass over the 3 bad ones


def test_indivisible_batch_and_missing_manifest_are_clear_errors(tiny_shards, tmp_path):
    with pytest.raises(ValueError, match="train.batch_size=9 is not divisible by world size 2"):
        _loader(tiny_shards, batch=9, world=2)
    with pytest.raises(FileNotFoundError, match="run the shard stage first"):
        read_shard_set(tmp_path)
    with pytest.raises(ValueError, match="train.data_fraction=1.5"):
        read_shard_set(tiny_shards, 1.5)


def test_buffer_shuffle_is_a_seeded_permutation():
    import random

    from cosmos.training.data import _buffer_shuffle

    out = list(_buffer_shuffle(range(100), 10, 4, random.Random(0)))
    assert sorted(out) == list(range(100)) and out != list(range(100))
    assert out == list(_buffer_shuffle(range(100), 10, 4, random.Random(0)))
