"""The training loader: webdataset shards -> per-sample views -> equal per-rank batches, exactly resumable.

Reference 6 shuffles shards with ``seed + epoch`` and samples through a buffer, and gives every rank the
same number of batches (``data.py:534-547``). We keep that and make three things deterministic that the
reference leaves to chance, so a run killed mid-epoch resumes bit-exactly:

- **Order.** Shards are shuffled with ``Random(seed + epoch)`` and dealt to ``(rank, worker)`` slots. Each
  slot shuffles its samples through a buffer seeded by ``(seed, epoch, rank, worker)``.
- **Augmentation.** Each sample is transformed under RNG states (``random``, ``numpy``, ``torch``) seeded by
  ``(seed, epoch, rank, worker, index)``; the caller's global RNG is left untouched, so ``num_workers=0``
  and ``num_workers>0`` both reproduce.
- **Position.** Batch ``i`` of an epoch comes from worker ``i % W`` (the DataLoader's round-robin), so
  resuming after ``c`` batches replays, in each worker, the reads and decodes of its consumed batches
  but not their augmentations.

Each slot cycles its shards as often as needed, so every rank yields exactly ``batches_per_epoch`` full
batches, with ``batches_per_epoch = num_samples // global_batch`` (at least 1). With fewer shards than
``world * workers`` slots, every slot reads all shards and keeps every ``world*workers``-th sample instead.

Corrupt samples (unreadable tar members, undecodable images, broken JSON) are skipped and counted; each
batch carries its worker's running count under ``"bad_samples"``.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from cosmos.data.images import BadImageError, decode_image
from cosmos.training.preemption import ignore_job_signals

__all__ = ["ShardSet", "TrainLoader", "derive_seed", "read_shard_set"]


@dataclass(frozen=True)
class ShardSet:
    """The shards a run trains on: ``(path, samples to read from its head)`` pairs, in manifest order."""

    shards: tuple[tuple[str, int], ...]

    @property
    def num_samples(self) -> int:
        return sum(n for _, n in self.shards)


def read_shard_set(shard_dir: str | Path, data_fraction: float = 1.0) -> ShardSet:
    """The shards in ``shard_dir/manifest.json``, cut to the first ``data_fraction`` of its samples.

    The cut is deterministic and nested: a smaller fraction is a prefix of a larger one (data-size
    ablation). The last shard kept may be read only partially.
    """
    if not 0.0 < data_fraction <= 1.0:
        raise ValueError(f"train.data_fraction={data_fraction} must lie in (0, 1]")
    manifest_path = Path(shard_dir) / "manifest.json"
    if not manifest_path.exists():
        raise FileNotFoundError(f"{manifest_path} not found: run the shard stage first (`dvc repro shard`)")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    budget = max(1, int(manifest["num_samples"] * data_fraction))
    shards = []
    for entry in manifest["shards"]:
        if budget <= 0:
            break
        take = min(entry["samples"], budget)
        shards.append((str(Path(shard_dir) / entry["file"]), take))
        budget -= take
    return ShardSet(tuple(shards))


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers, stable across processes and Python versions (unlike ``hash``)."""
    digest = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class _SeededRNG:
    """Run a block under fixed ``random``/``numpy``/``torch`` CPU RNG states, then restore the caller's."""

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self) -> None:
        self.saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        random.seed(self.seed)
        np.random.seed(self.seed % 2**32)
        # The CPU generator only: torch.manual_seed would also queue lazy CUDA/XPU/MTIA seeding, capturing a
        # Python stack each time (~0.7 ms per sample), and leave a CUDA run's generator re-seeded.
        torch.default_generator.manual_seed(self.seed)

    def __exit__(self, *exc: Any) -> None:
        py, np_state, torch_state = self.saved
        random.setstate(py)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)


def _buffer_shuffle(items: Iterator[Any], bufsize: int, initial: int, rng: random.Random) -> Iterator[Any]:
    """webdataset's buffer shuffle: read two items per item yielded until ``bufsize`` are buffered, start
    yielding (a uniformly random buffered item) once ``initial`` are; drain the buffer at the end."""
    items, buf, end = iter(items), [], object()
    for item in items:
        buf.append(item)
        if len(buf) < bufsize:
            extra = next(items, end)
            if extra is not end:
                buf.append(extra)
        if len(buf) >= min(initial, bufsize):
            k = rng.randrange(len(buf))
            buf[k], buf[-1] = buf[-1], buf[k]
            yield buf.pop()
    rng.shuffle(buf)
    yield from buf


class TrainLoader(IterableDataset):
    """One epoch of per-rank batches; iterate :meth:`epoch` (a DataLoader) rather than the dataset itself.

    Args:
        shard_set: what to read (see :func:`read_shard_set`).
        transform: ``(PIL image, caption record) -> sample`` (``SampleTransform``); runs in the workers.
        collate: ``list[sample] -> batch dict`` (``collate`` with the tokenizer bound); runs in the workers.
        global_batch: samples per step over all ranks; must divide by ``world_size``.
        seed: the run seed; epoch ``e`` uses ``seed + e`` for the shard order.
        rank, world_size: this process's data-parallel position.
        num_workers: DataLoader worker processes (0: in-process).
        shuffle_buffer / shuffle_initial: sample shuffle buffer per worker (reference 5000 / 1000).
    """

    def __init__(self, shard_set: ShardSet, transform: Callable[[Any, dict], Any],
                 collate: Callable[[list], dict], *, global_batch: int, seed: int, rank: int = 0,
                 world_size: int = 1, num_workers: int = 0, shuffle_buffer: int = 1000,
                 shuffle_initial: int = 100):
        if global_batch % world_size:
            raise ValueError(f"train.batch_size={global_batch} is not divisible by world size {world_size}")
        if not shard_set.shards:
            raise ValueError("no training shards")
        self.shard_set, self.transform, self.collate = shard_set, transform, collate
        self.batch = global_batch // world_size
        self.seed, self.rank, self.world, self.num_workers = seed, rank, world_size, num_workers
        self.shuffle_buffer, self.shuffle_initial = shuffle_buffer, shuffle_initial
        self.batches_per_epoch = max(1, shard_set.num_samples // global_batch)
        self._epoch, self._skip = 0, 0

    # ------------------------------------------------------------------------------- main process API

    def epoch(self, epoch: int, skip_batches: int = 0) -> DataLoader:
        """A DataLoader over the batches of ``epoch`` after the first ``skip_batches`` (resume)."""
        if not 0 <= skip_batches <= self.batches_per_epoch:
            raise ValueError(f"skip_batches={skip_batches} outside [0, {self.batches_per_epoch}]")
        self._epoch, self._skip = epoch, skip_batches
        # Forked workers would inherit the trainer's job-signal handlers; only the trainer answers a preemption.
        return DataLoader(self, batch_size=None, num_workers=self.num_workers, persistent_workers=False,
                          multiprocessing_context="fork" if self.num_workers else None,
                          worker_init_fn=ignore_job_signals if self.num_workers else None)

    def __len__(self) -> int:
        return self.batches_per_epoch

    # ----------------------------------------------------------------------------------- worker side

    def _slot(self) -> tuple[int, int]:
        """(logical worker, workers). The DataLoader asks worker ``j % W`` for the ``j``-th batch it yields;
        after skipping ``c`` batches that must be global batch ``c + j``, so physical worker ``p`` plays the
        role of worker ``(p + c) % W`` of an uninterrupted epoch."""
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return (worker + self._skip) % workers, workers

    def _my_batches(self, worker: int, workers: int) -> tuple[int, int]:
        """(batches this worker yields in the epoch, of which already consumed before a resume)."""
        total = self.batches_per_epoch
        mine = len(range(worker, total, workers))
        skipped = len(range(worker, self._skip, workers))
        return mine, skipped

    def _raw_samples(self, worker: int, workers: int, stats: dict[str, int]) -> Iterator[dict]:
        """Raw ``{"jpg", "json"}`` dicts of this slot, shuffled, cycling over its shards forever."""
        slots, slot = self.world * workers, self.rank * workers + worker
        shards = list(self.shard_set.shards)
        random.Random(self.seed + self._epoch).shuffle(shards)
        by_shard = len(shards) >= slots
        mine = shards[slot::slots] if by_shard else shards

        def handler(err: Exception) -> bool:
            stats["bad_samples"] += 1
            return True  # skip and continue

        def one_pass(cycle: int) -> Iterator[dict]:
            order = list(mine)
            if cycle:
                random.Random(derive_seed(self.seed, self._epoch, slot, cycle)).shuffle(order)
            index = 0
            for path, take in order:
                src = wds.tarfile_to_samples(handler=handler)(iter([{"url": path}]))
                for n, sample in enumerate(src):
                    if n >= take:
                        break
                    if not by_shard:
                        index += 1
                        if (index - 1) % slots != slot:
                            continue
                    yield sample

        def cycled() -> Iterator[dict]:
            cycle = 0
            while True:
                empty = True
                for sample in one_pass(cycle):
                    empty = False
                    yield sample
                if empty:
                    raise RuntimeError(f"data slot {slot} read no samples from {len(mine)} shard(s)")
                cycle += 1

        rng = random.Random(derive_seed(self.seed, self._epoch, self.rank, worker))
        return _buffer_shuffle(cycled(), self.shuffle_buffer, self.shuffle_initial, rng)

    def _decode(self, sample: dict) -> tuple[Any, dict]:
        image = decode_image(sample["jpg"])
        record = json.loads(sample["json"].decode("utf-8"))
        return image, record

    def _good_samples(self, raw: Iterator[dict], stats: dict[str, int]) -> Iterator[tuple[int, Any, dict]]:
        """``(index, image, record)`` of the samples that decode; ``index`` counts raw samples read."""
        for index, sample in enumerate(raw, start=1):
            try:
                image, record = self._decode(sample)
            except (BadImageError, KeyError, ValueError, UnicodeDecodeError):
                stats["bad_samples"] += 1
                continue
            yield index, image, record

    def __iter__(self) -> Iterator[dict]:
        worker, workers = self._slot()
        mine, skipped = self._my_batches(worker, workers)
        stats = {"bad_samples": 0}
        good = self._good_samples(self._raw_samples(worker, workers, stats), stats)
        # Resume: replay the consumed samples' reads and decodes (cheap), not their augmentations.
        for _ in range(skipped * self.batch):
            next(good)
        for _ in range(mine - skipped):
            samples = []
            for _ in range(self.batch):
                index, image, record = next(good)
                with _SeededRNG(derive_seed(self.seed, self._epoch, self.rank, worker, index)):
                    samples.append(self.transform(image, record))
            batch = self.collate(samples)
            batch["bad_samples"] = stats["bad_samples"]
            batch["worker"] = worker
            yield batch


def batch_to(batch: dict, device: torch.device) -> dict:
    """Move the tensors of a collated batch (``images`` list, ``texts``) to ``device``."""
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            out[key] = value.to(device, non_blocking=True)
        elif isinstance(value, Sequence) and value and isinstance(value[0], torch.Tensor):
            out[key] = [v.to(device, non_blocking=True) for v in value]
        else:
            out[key] = value
    return out
