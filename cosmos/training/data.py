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

The workers persist across epochs (one DataLoader per run, not per epoch): they are forked once, and read
the epoch and the resume position of every :meth:`TrainLoader.epoch` call from shared memory. A fresh
DataLoader per epoch drew its workers' base seed from the global torch RNG; the persistent one draws the
same number, so the trainer's RNG stream (and the checkpoints' RNG state) is the same as with re-forked
workers. ``pin_memory`` (CUDA training) stages batches in pinned memory for non-blocking copies, and
:func:`batch_to` (:mod:`cosmos.training.device_batch`) normalizes uint8 crops on the device.
"""

from __future__ import annotations

import atexit
import copy
import hashlib
import json
import os
import random
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.sharedctypes import RawValue
from multiprocessing.util import Finalize
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from cosmos.data.images import BadImageError, decode_image
from cosmos.training.device_batch import batch_to
from cosmos.training.preemption import ignore_job_signals

__all__ = ["ShardSet", "TrainLoader", "batch_to", "derive_seed", "read_shard_set"]


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


class _EpochLoader(DataLoader):
    """A DataLoader re-iterated once per epoch over persistent workers.

    A fresh multi-worker DataLoader iterator draws one int64 (the workers' base seed) from the global torch
    RNG; re-iterating persistent workers draws none. Drawing it here keeps the caller's RNG stream exactly as
    it was with a fresh DataLoader per epoch, so checkpoints and resumes see the same RNG states. The workers do
    not use that seed: every sample runs under its own seeded RNG (``_SeededRNG``).
    """

    def __iter__(self):
        if self.persistent_workers and self._iterator is not None:
            torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        return super().__iter__()


_PERSISTENT: weakref.WeakSet[DataLoader] = weakref.WeakSet()
_EXIT_HOOK_PID: int | None = None


def _shut_down_at_exit(loader: DataLoader) -> None:
    """Shut ``loader``'s persistent workers down before the process exits, if it is still alive then.

    A freed loader shuts its workers down itself (its iterator's ``__del__``); at exit that does not happen in
    time. The workers ignore SIGTERM (``ignore_job_signals``), and multiprocessing's exit handler terminates
    daemonic children with SIGTERM, then joins them: it would wait forever. So they get the DataLoader's own
    shutdown (a poison pill each, then join) first: from ``atexit``, registered after torch's exit flag (which
    turns that shutdown into a no-op) so that it runs before it, and, in a multiprocessing child, where atexit
    does not run, from multiprocessing's exit finalizers, ahead of those that close the DataLoader's queues
    (priority 10), which would swallow the poison pills. Registered once per process: forked children start with
    the finalizers cleared.
    """
    global _EXIT_HOOK_PID
    _PERSISTENT.add(loader)
    if _EXIT_HOOK_PID != os.getpid():
        _EXIT_HOOK_PID = os.getpid()
        atexit.register(_shut_down_persistent_workers)
        Finalize(None, _shut_down_persistent_workers, exitpriority=100)


def _shut_down_persistent_workers() -> None:
    for loader in list(_PERSISTENT):
        iterator, loader._iterator = loader._iterator, None
        if iterator is not None:
            iterator._shutdown_workers()


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
        pin_memory: stage batches in pinned (page-locked) host memory, so :func:`batch_to`'s
            ``non_blocking`` copies to a CUDA device overlap the host; set it when training on CUDA.
        persistent_workers: keep the worker processes across epochs (module docstring). False forks them
            anew every epoch, as before; the batches are the same either way.
    """

    def __init__(self, shard_set: ShardSet, transform: Callable[[Any, dict], Any],
                 collate: Callable[[list], dict], *, global_batch: int, seed: int, rank: int = 0,
                 world_size: int = 1, num_workers: int = 0, shuffle_buffer: int = 1000,
                 shuffle_initial: int = 100, pin_memory: bool = False, persistent_workers: bool = True):
        if global_batch % world_size:
            raise ValueError(f"train.batch_size={global_batch} is not divisible by world size {world_size}")
        if not shard_set.shards:
            raise ValueError("no training shards")
        self.shard_set, self.transform, self.collate = shard_set, transform, collate
        self.batch = global_batch // world_size
        self.seed, self.rank, self.world, self.num_workers = seed, rank, world_size, num_workers
        self.shuffle_buffer, self.shuffle_initial = shuffle_buffer, shuffle_initial
        self.batches_per_epoch = max(1, shard_set.num_samples // global_batch)
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        # The position of the epoch being iterated. Workers forked in an earlier epoch see the parent's later
        # epoch() calls only through shared memory, created here, before any fork. The parent writes it before
        # iterating; the DataLoader then tells the workers to restart (a queue message), and they read it once,
        # at the start of __iter__, into _epoch and _skip.
        self._shared_epoch, self._shared_skip = RawValue("q", 0), RawValue("q", 0)
        self._epoch, self._skip = 0, 0
        self._loader: DataLoader | None = None

    # ------------------------------------------------------------------------------- main process API

    def epoch(self, epoch: int, skip_batches: int = 0) -> DataLoader:
        """A DataLoader over the batches of ``epoch`` after the first ``skip_batches`` (resume).

        With persistent workers it is the same DataLoader every call: iterate one epoch at a time. Iterating it
        again (the next ``epoch`` call) restarts the workers at the new position and drops whatever they had
        prefetched of an abandoned epoch.
        """
        if not 0 <= skip_batches <= self.batches_per_epoch:
            raise ValueError(f"skip_batches={skip_batches} outside [0, {self.batches_per_epoch}]")
        if epoch < 0:
            raise ValueError(f"epoch={epoch} must be >= 0")
        self._shared_epoch.value, self._shared_skip.value = epoch, skip_batches
        self._epoch, self._skip = epoch, skip_batches
        if self._loader is None or not self.persistent_workers:
            # Forked workers would inherit the trainer's job-signal handlers; only the trainer answers a preemption.
            self._loader = _EpochLoader(
                self._dataset(), batch_size=None, num_workers=self.num_workers, persistent_workers=self.persistent_workers,
                pin_memory=self.pin_memory, multiprocessing_context="fork" if self.num_workers else None,
                worker_init_fn=ignore_job_signals if self.num_workers else None)
            if self.persistent_workers:
                _shut_down_at_exit(self._loader)
        return self._loader

    def __len__(self) -> int:
        return self.batches_per_epoch

    def _dataset(self) -> TrainLoader:
        """What the DataLoader iterates: this loader without its DataLoader (a shallow copy sharing the position).

        Iterating ``self`` would close a reference cycle (DataLoader -> dataset -> DataLoader) that only the cyclic
        garbage collector frees. A dropped loader's persistent workers would then live on until a collection, and
        the collection could run in a later DataLoader's forked worker, whose copy of the old iterator then shuts
        down workers it does not own, on queue locks a parent thread held at the fork: a hang. Without the cycle,
        dropping the loader shuts its workers down at once.
        """
        dataset = copy.copy(self)
        dataset._loader = None
        return dataset

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
        # A persistent worker's copy was forked in an earlier epoch: the parent's epoch() reaches it only here.
        self._epoch, self._skip = self._shared_epoch.value, self._shared_skip.value
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
