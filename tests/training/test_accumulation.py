"""Exact gradient accumulation (``train.accum_steps``, :mod:`cosmos.training.accumulation`): the same loss and
gradients as the full batch, for every method, in one process and on 2 gloo ranks; exact resume.

Tolerances (CPU): loss terms to 1e-6; each gradient tensor to 1e-5 of its largest entry in fp32 (the
micro-batches' matmuls sum in another order; SiLC's sharp DINO softmax amplifies that round-off to 1e-6 of the
largest entry, in the full-batch path as much as in the accumulated one: in fp64 the two agree to 4e-15, which
the fp64 case checks at 1e-10); SiLC's DINO centre after the step to 1e-6 (weights are not compared
after a step: Adam turns the round-off of a zero gradient, e.g. an attention key bias's, into +-lr; see
tests/training/test_ddp_parity.py; the resume test compares weights bit-exactly instead). A wrong
accumulation is far outside: a summed-small-batch gradient misses every cross-micro-batch negative (the loss
itself differs at 1e-1), and a temperature counted once per micro-batch is 4x off.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.multiprocessing as mp

from cosmos.training.accumulation import GradCache, split_batch
from cosmos.training.config import ModelConfig
from cosmos.training.data import batch_to
from cosmos.training.pretrain import build_trainer
from tests.training.test_ddp_parity import METHODS, OPTIM, TRAIN, _free_port, _half, gloo_rank, switches_for

GLOBAL_B, ACCUM = 8, 4
MODEL = ModelConfig("cosmos-tiny")


def _trainer(method: str, out, shards, accum_steps: int = 1, world=None, **train_changes):
    train = dataclasses.replace(TRAIN, accum_steps=accum_steps, **train_changes)
    kwargs = {} if world is None else {"world": world}
    return build_trainer(out_dir=out, shard_dir=shards, seed=0, model=MODEL, optim=OPTIM, train=train,
                         switches=switches_for(method), **kwargs)


def _batches(trainer, n: int) -> list[dict]:
    out = []
    for batch in trainer.loader.epoch(0):
        batch.pop("worker"), batch.pop("bad_samples")
        out.append(batch)
        if len(out) == n:
            return out
    raise AssertionError(f"the loader gave {len(out)} of {n} batches")


def _one_step(trainer, batch) -> dict:
    bare = getattr(trainer.student, "module", trainer.student)
    losses = trainer.train_step(batch)
    grads = {name: p.grad.clone() for name, p in bare.named_parameters() if p.grad is not None}
    return {"losses": losses, "grads": grads, "objective": trainer.objective.state_dict()}


def _assert_same_step(got: dict, want: dict, label: str, tol: float = 1e-5) -> None:
    assert got["losses"].keys() == want["losses"].keys()
    for term, value in want["losses"].items():
        assert got["losses"][term] == pytest.approx(value, abs=1e-6), (label, term)
    assert got["grads"].keys() == want["grads"].keys(), label
    for name, grad in want["grads"].items():
        torch.testing.assert_close(got["grads"][name], grad, atol=tol * grad.abs().max().item() + 1e-12, rtol=0,
                                   msg=lambda m, n=name: f"{label} {n}: {m}")
    for name, value in want["objective"].items():  # SiLC's DINO centre: one update per global batch
        torch.testing.assert_close(got["objective"][name], value, atol=1e-6, rtol=0)


def test_split_batch_keeps_every_caption_block_and_view_in_sample_order():
    b, k = 6, 3
    images = [torch.arange(b).float().view(b, 1, 1, 1) + 10 * v for v in range(2)]
    texts = (torch.arange(k).view(k, 1) * 100 + torch.arange(b)).reshape(k * b, 1)  # caption-major
    micro = split_batch({"images": images, "texts": texts, "text_ends": texts[:, 0] + 1}, 3)
    assert [p["images"][1].flatten().tolist() for p in micro] == [[10, 11], [12, 13], [14, 15]]
    assert micro[1]["texts"].flatten().tolist() == [2, 3, 102, 103, 202, 203]
    assert torch.equal(micro[1]["text_ends"], micro[1]["texts"][:, 0] + 1)
    with pytest.raises(ValueError, match="train.accum_steps=4 must divide the per-rank batch of 6"):
        split_batch({"images": images, "texts": texts}, 4)
    with pytest.raises(ValueError, match="accum_steps >= 2"):
        GradCache(1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", list(METHODS))
def test_accumulation_equals_the_full_batch_in_one_process(method, dtype, tiny_shards, tmp_path):
    plain = _trainer(method, tmp_path / "plain", tiny_shards)
    batch = _batches(plain, 1)[0]
    assert batch["images"][0].shape[0] == GLOBAL_B
    accumulated = _trainer(method, tmp_path / "accum", tiny_shards, accum_steps=ACCUM)
    assert isinstance(accumulated.accumulation, GradCache)
    if dtype == torch.float64:
        for trainer in (plain, accumulated):
            for module in (trainer.student, trainer.objective) + ((trainer.teacher.module,) if trainer.teacher else ()):
                module.to(dtype)
        batch = batch_to(batch, plain.device)
        batch = {**batch, "images": [view.to(dtype) for view in batch["images"]]}
    want = _one_step(plain, batch)
    got = _one_step(accumulated, batch)
    _assert_same_step(got, want, f"{method} {dtype}", tol=1e-5 if dtype == torch.float32 else 1e-10)
    # The temperatures get one copy of their gradient, not one per micro-batch (covered above; said here).
    assert got["grads"]["logit_scale"] == pytest.approx(want["grads"]["logit_scale"].item(), rel=1e-4)


def test_summing_small_batch_gradients_is_not_the_objective(tiny_shards, tmp_path):
    # What the test above guards against: plain accumulation of micro-batch gradients changes the loss itself.
    plain = _trainer("cosmos", tmp_path / "plain", tiny_shards)
    batch = batch_to(_batches(plain, 1)[0], plain.device)
    with torch.no_grad():
        full = sum(plain.objective(plain.student, plain.teacher, batch, 0).values()).item()
        parts = [sum(plain.objective(plain.student, plain.teacher, part, 0).values()).item()
                 for part in split_batch(batch, ACCUM)]
    assert abs(full - sum(parts) / ACCUM) > 0.1


def _worker(rank: int, port: int, method: str, shards: str, out: str) -> None:
    with gloo_rank(rank, port) as world:
        batch = _half(torch.load(f"{out}/batch.pt", weights_only=True), rank, switches_for(method).num_captions)
        runs = {}
        for accum in (1, 2):
            trainer = _trainer(method, f"{out}/ckpt{accum}", shards, accum_steps=accum, world=world)
            assert isinstance(trainer.student, torch.nn.parallel.DistributedDataParallel)
            runs[accum] = _one_step(trainer, batch)
        torch.save(runs, f"{out}/rank{rank}.pt")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("method", list(METHODS))
def test_accumulation_under_ddp_equals_the_same_ranks_without_it(method, tiny_shards, tmp_path):
    # 2 ranks x 4 samples, 2 micro-batches of 2 per rank, against the same 2 ranks in one pass each.
    plain = _trainer(method, tmp_path / "single", tiny_shards)
    torch.save(_batches(plain, 1)[0], tmp_path / "batch.pt")
    mp.spawn(_worker, args=(_free_port(), method, str(tiny_shards), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        runs = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        _assert_same_step(runs[2], runs[1], f"{method} rank {rank}")


def test_a_resumed_run_with_accumulation_is_exact(tiny_shards, tmp_path):
    full = _trainer("cosmos", tmp_path / "full", tiny_shards, accum_steps=2, epochs=2, data_fraction=0.5,
                    resume="auto")
    assert full.total_steps == 6
    full.fit()
    cut = _trainer("cosmos", tmp_path / "cut", tiny_shards, accum_steps=2, epochs=2, data_fraction=0.5,
                   resume="auto", max_steps=4)
    cut.fit()
    torch.manual_seed(999)
    resumed = _trainer("cosmos", tmp_path / "cut", tiny_shards, accum_steps=2, epochs=2, data_fraction=0.5,
                       resume="auto")
    assert resumed.position.step == 4
    resumed.fit()
    want, got = full.student.state_dict(), resumed.student.state_dict()
    assert [k for k in want if not torch.equal(want[k], got[k])] == []
    assert all(torch.equal(full.teacher.state_dict()[k], v) for k, v in resumed.teacher.state_dict().items())
