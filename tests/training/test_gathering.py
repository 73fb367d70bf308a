"""OpenCLIP's ``local_loss`` / ``gather_with_grad`` (:class:`cosmos.losses.gather.Gathering`) on 2 gloo ranks,
against one process on the same global batch of 8 and against the default gathering.

The relations (docs/training.md, "Scalable gathering"): with ``gather_with_grad``, with or without
``local_loss``, every parameter's DDP gradient equals the single-process gradient (factor 1, towers included;
the default gives the towers 1/world of it); ``local_loss`` alone leaves each rank the loss of its own rows,
whose mean over the ranks is the single-process loss. Tolerances: losses to 1e-5; each gradient tensor to 1e-5
of its largest entry (fp32 round-off, which SiLC's sharp DINO softmax amplifies to ~1e-6 of it; see
tests/training/test_accumulation.py).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.multiprocessing as mp

from cosmos.training.config import ModelConfig
from cosmos.training.pretrain import build_trainer
from tests.training.test_ddp_parity import OPTIM, TRAIN, _free_port, _half, gloo_rank, switches_for

VARIANTS = {"default": (False, False), "with_grad": (False, True), "local_with_grad": (True, True),
            "local": (True, False)}
MODEL = ModelConfig("cosmos-tiny")


def _trainer(method: str, out, shards, variant: str = "default", world=None):
    local, with_grad = VARIANTS[variant]
    train = dataclasses.replace(TRAIN, local_loss=local, gather_with_grad=with_grad)
    kwargs = {} if world is None else {"world": world}
    return build_trainer(out_dir=out, shard_dir=shards, seed=0, model=MODEL, optim=OPTIM, train=train,
                         switches=switches_for(method), **kwargs)


def _one_step(trainer, batch) -> dict:
    bare = getattr(trainer.student, "module", trainer.student)
    losses = trainer.train_step(batch)
    return {"losses": losses, "grads": {n: p.grad.clone() for n, p in bare.named_parameters() if p.grad is not None}}


def _worker(rank: int, port: int, method: str, shards: str, out: str) -> None:
    with gloo_rank(rank, port) as world:
        batch = _half(torch.load(f"{out}/batch.pt", weights_only=True), rank, switches_for(method).num_captions)
        runs = {v: _one_step(_trainer(method, f"{out}/ckpt-{v}", shards, v, world), batch) for v in VARIANTS}
        torch.save(runs, f"{out}/rank{rank}.pt")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("method", ["clip", "silc", "cosmos"])
def test_gather_with_grad_gives_every_parameter_the_single_process_gradient(method, tiny_shards, tmp_path):
    single = _trainer(method, tmp_path / "single", tiny_shards)
    batch = next(iter(single.loader.epoch(0)))
    batch.pop("worker"), batch.pop("bad_samples")
    torch.save(batch, tmp_path / "batch.pt")
    want = _one_step(single, batch)
    mp.spawn(_worker, args=(_free_port(), method, str(tiny_shards), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for rank, runs in enumerate(ranks):
        for variant in ("with_grad", "local_with_grad"):
            got = runs[variant]
            assert got["grads"].keys() == want["grads"].keys()
            for name, grad in want["grads"].items():
                tol = 1e-5 * grad.abs().max().item() + 1e-12
                torch.testing.assert_close(got["grads"][name], grad, atol=tol, rtol=0,
                                           msg=lambda m, n=name, v=variant: f"rank {rank} {v} {n}: {m}")
                # ... which is world x the default gathering's tower gradient (the temperatures agree).
                scale = 1 if name.endswith("logit_scale") else 2
                torch.testing.assert_close(runs["default"]["grads"][name] * scale, grad, atol=tol, rtol=0)
        for term, value in want["losses"].items():
            if term not in ("silc_distill_loss", "loss"):  # with_grad: the DINO term is each rank's local mean
                assert runs["with_grad"]["losses"][term] == pytest.approx(value, abs=1e-5), (rank, term)
    # local_loss: each rank's own rows; their mean is the single-process loss, and the two ranks differ.
    for variant in ("local", "with_grad", "local_with_grad"):
        for term, value in want["losses"].items():
            mean = sum(runs[variant]["losses"][term] for runs in ranks) / 2
            assert mean == pytest.approx(value, abs=1e-5), (variant, term)
    assert ranks[0]["local"]["losses"]["clip_loss"] != pytest.approx(ranks[1]["local"]["losses"]["clip_loss"], abs=1e-4)
