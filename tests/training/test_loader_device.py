"""The GPU-friendly data path (issue 26): uint8 crops normalized after the copy, persistent workers, host-side ends.

Each change must leave the CPU numbers bit-identical: the normalized uint8 crops equal the float crops, and the
persistent workers yield the batches (and leave the trainer's RNG) exactly as workers re-forked every epoch.
"""

from __future__ import annotations

import gc
import io
import json
import os
import subprocess
import sys
from functools import partial

import pytest
import torch
import webdataset as wds
from PIL import Image
from torchvision import transforms as T

from cosmos.augment.multicrop import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, MultiCrop, single_crop_transform
from cosmos.method import SampleTransform, collate
from cosmos.text import build_tokenizer
from cosmos.training.data import TrainLoader, _SeededRNG, batch_to, read_shard_set
from cosmos.training.device_batch import normalize_images
from tests.conftest import REPO_ROOT
from tests.method.test_sample_transform import switches_for

CONTEXT = 24  # cosmos-tiny
TO_FLOAT = T.Compose([T.ToTensor(), T.Normalize(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)])


def _shard_samples(tiny_shards, n: int = 4) -> list[tuple[Image.Image, dict]]:
    """The first ``n`` real training samples: decoded image and caption record."""
    shard = sorted(tiny_shards.glob("train-*.tar"))[0]
    samples = list(wds.WebDataset(str(shard), shardshuffle=False))[:n]
    return [(Image.open(io.BytesIO(s["jpg"])).convert("RGB"), json.loads(s["json"])) for s in samples]


def _equal_views(float_views, uint8_views) -> bool:
    assert all(v.dtype == torch.uint8 for v in uint8_views) and all(v.dtype == torch.float32 for v in float_views)
    return len(float_views) == len(uint8_views) and all(
        torch.equal(f, normalize_images(u)) for f, u in zip(float_views, uint8_views))


# ------------------------------------------------------------------------------------------- uint8 crops


def test_normalize_images_is_to_tensor_and_normalize_for_every_pixel_value():
    values = torch.arange(256, dtype=torch.uint8)
    # every value in every channel, in all three channel orders
    pixels = torch.stack([values, values.roll(85), values.roll(170)]).view(3, 16, 16)
    image = Image.fromarray(pixels.permute(1, 2, 0).numpy(), "RGB")
    assert torch.equal(T.PILToTensor()(image), pixels)
    assert torch.equal(normalize_images(pixels), TO_FLOAT(image))
    # batched, and large enough for the vectorized kernels: the same numbers per crop
    batch = torch.randint(0, 256, (5, 3, 37, 41), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    expected = torch.stack([TO_FLOAT(Image.fromarray(c.permute(1, 2, 0).numpy(), "RGB")) for c in batch])
    assert torch.equal(normalize_images(batch), expected)


def test_normalize_images_refuses_what_is_not_rgb_pixels():
    with pytest.raises(TypeError, match="takes uint8 pixels, got torch.float32"):
        normalize_images(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match=r"RGB pixels \[..., 3, S, S\], got \(1, 4, 4, 4\)"):
        normalize_images(torch.zeros(1, 4, 4, 4, dtype=torch.uint8))


def test_uint8_multicrop_and_single_crop_normalize_to_the_float_crops(tiny_shards):
    kwargs = {"global_size": 32, "local_size": 16, "local_crops_number": 3, "blur_radius": (0.01, 0.3)}
    for i, (image, _) in enumerate(_shard_samples(tiny_shards)):
        for make in (lambda u: MultiCrop(**kwargs, uint8=u), lambda u: single_crop_transform(24, uint8=u),
                     lambda u: single_crop_transform(224, uint8=u)):
            with _SeededRNG(100 + i):
                floats = make(False)(image)
            with _SeededRNG(100 + i):
                pixels = make(True)(image)
            floats, pixels = (floats, pixels) if isinstance(floats, list) else ([floats], [pixels])
            assert _equal_views(floats, pixels)


@pytest.mark.parametrize("option", ["cosmos", "clip"])  # multi-crop, and the single crop
def test_uint8_sample_transform_normalizes_to_the_float_transform(tiny_shards, option):
    switches = switches_for(option)
    for i, (image, record) in enumerate(_shard_samples(tiny_shards)):
        with _SeededRNG(7 + i):
            floats, captions = SampleTransform(switches)(image, record)
        with _SeededRNG(7 + i):
            pixels, captions_u8 = SampleTransform(switches, uint8=True)(image, record)
        assert captions == captions_u8 and _equal_views(floats, pixels)


def _loader(tiny_shards, *, uint8=False, workers=0, persistent=True, pids=False, pin=False, batch=8):
    tokenizer = build_tokenizer(CONTEXT)
    return TrainLoader(read_shard_set(tiny_shards), SampleTransform(switches_for("cosmos"), uint8=uint8),
                       partial(_collate_with_pid if pids else collate, tokenizer=tokenizer), global_batch=batch,
                       seed=3, num_workers=workers, shuffle_buffer=16, shuffle_initial=4, pin_memory=pin,
                       persistent_workers=persistent)


def _collate_with_pid(samples, tokenizer):
    return {**collate(samples, tokenizer), "pid": os.getpid()}


def test_uint8_training_batches_equal_the_float_batches_after_batch_to(tiny_shards):
    floats = list(_loader(tiny_shards).epoch(1))
    pixels = list(_loader(tiny_shards, uint8=True).epoch(1))
    assert len(floats) == len(pixels) == 60 // 8
    for f, u in zip(floats, pixels):
        assert all(view.dtype == torch.uint8 for view in u["images"])
        moved = batch_to(u, torch.device("cpu"))
        assert moved.keys() == f.keys() == {"images", "texts", "text_ends", "bad_samples", "worker"}
        assert all(torch.equal(a, b) for a, b in zip(moved["images"], f["images"]))
        assert torch.equal(moved["texts"], f["texts"]) and torch.equal(moved["text_ends"], f["text_ends"])


def test_batch_to_leaves_text_ends_and_the_counters_on_the_host():
    batch = {"images": [torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2, 3, 2, 2)],
             "texts": torch.zeros(4, 5, dtype=torch.long), "text_ends": torch.ones(4, dtype=torch.long),
             "worker": 1, "bad_samples": 0}
    meta = torch.device("meta")  # a stand-in for an accelerator: moved tensors show it
    out = batch_to(batch, meta)
    assert [v.device for v in out["images"]] == [meta, meta] and out["texts"].device == meta
    assert [v.dtype for v in out["images"]] == [torch.float32, torch.float32]
    assert out["text_ends"] is batch["text_ends"] and out["worker"] == 1 and out["bad_samples"] == 0


# ------------------------------------------------------------------------- persistent workers, pinning

# (epoch, skip_batches, batches taken): a full epoch, a resume in the middle of epoch 1, an epoch abandoned
# after two batches (a max_steps stop), the same epoch again in full, and the next one.
SCHEDULE = [(0, 0, None), (1, 3, None), (1, 0, 2), (1, 0, None), (2, 0, None)]


def _run_schedule(loader):
    torch.manual_seed(11)
    out = []
    for epoch, skip, take in SCHEDULE:
        batches = []
        for batch in loader.epoch(epoch, skip):
            batches.append(batch)
            if take is not None and len(batches) == take:
                break
        out.append(batches)
    return out, torch.get_rng_state()


def test_persistent_workers_yield_the_batches_of_re_forked_workers(tiny_shards):
    persistent, rng = _run_schedule(_loader(tiny_shards, uint8=True, workers=2, pids=True))
    fresh, fresh_rng = _run_schedule(_loader(tiny_shards, uint8=True, workers=2, pids=True, persistent=False))
    assert [len(e) for e in persistent] == [len(e) for e in fresh] == [7, 4, 2, 7, 7]
    for p_epoch, f_epoch in zip(persistent, fresh):
        for p, f in zip(p_epoch, f_epoch):
            assert all(torch.equal(a, b) for a, b in zip(p["images"], f["images"]))
            assert torch.equal(p["texts"], f["texts"]) and torch.equal(p["text_ends"], f["text_ends"])
            assert (p["worker"], p["bad_samples"]) == (f["worker"], f["bad_samples"])
    # the resume in epoch 1 is the rest of that epoch, and epoch 1 after the abandoned start is all of it
    assert all(torch.equal(a["texts"], b["texts"]) for a, b in zip(persistent[1], persistent[3][3:]))
    assert all(torch.equal(a["texts"], b["texts"]) for a, b in zip(persistent[2], persistent[3]))
    # the trainer's RNG advanced as with a fresh DataLoader per epoch (checkpoints store it)
    assert torch.equal(rng, fresh_rng)
    # the same two worker processes served every epoch; re-forked ones are new every epoch
    pids = [{b["pid"] for b in epoch} for epoch in persistent]
    assert len(pids[0]) == 2 and all(p == pids[0] for p in pids) and os.getpid() not in pids[0]
    fresh_pids = [{b["pid"] for b in epoch} for epoch in fresh]
    assert len(set().union(*fresh_pids)) == 2 * len(SCHEDULE)


def test_dropping_a_persistent_loader_shuts_its_workers_down(tiny_shards):
    """No reference cycle keeps the workers alive until a garbage collection (which could run in a forked child)."""
    loader = _loader(tiny_shards, workers=2, pids=True)
    pids = {batch["pid"] for batch in loader.epoch(0)}
    assert len(pids) == 2 and all(_alive(pid) for pid in pids)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # refcounting alone must free it
    try:
        del loader
        assert not any(_alive(pid) for pid in pids)
    finally:
        if gc_was_enabled:
            gc.enable()


EXIT_SCRIPT = """
import multiprocessing as mp, sys
from pathlib import Path
from tests.training.test_loader_device import _loader

KEEP = []


def hold(shards):
    loader = _loader(Path(shards), workers=2)
    for i, _ in enumerate(loader.epoch(0)):
        if i == 1:
            break  # abandoned mid-epoch, the workers busy prefetching
    KEEP.append(loader)


if __name__ == "__main__":
    child = mp.get_context("spawn").Process(target=hold, args=(sys.argv[1],))
    child.start()
    child.join(60)
    assert child.exitcode == 0, child.exitcode
    hold(sys.argv[1])
"""


@pytest.mark.timeout(300)
def test_a_process_holding_persistent_workers_exits(tiny_shards, tmp_path):
    """The workers ignore SIGTERM, by which multiprocessing's exit would stop them: the loader shuts them down
    first, at interpreter exit and at a multiprocessing child's exit (a spawned DDP rank)."""
    script = tmp_path / "hold.py"
    script.write_text(EXIT_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, str(script), str(tiny_shards)], env=env, timeout=180,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_persistent_loader_is_one_dataloader_and_pins_when_asked(tiny_shards):
    loader = _loader(tiny_shards, workers=2)
    first = loader.epoch(0)
    assert loader.epoch(1, 2) is first and first.persistent_workers and not first.pin_memory
    assert _loader(tiny_shards, workers=2, pin=True).epoch(0).pin_memory
    in_process = _loader(tiny_shards)
    assert not in_process.epoch(0).persistent_workers  # no workers to keep
    with pytest.raises(ValueError, match="epoch=-1"):
        loader.epoch(-1)
