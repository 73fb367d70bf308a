"""Execution switches that must not change the numbers: ``model.grad_checkpointing`` and ``train.compile``.

Activation checkpointing recomputes each transformer block in backward from its saved input; in fp32 on CPU the
recomputation is the same arithmetic, so the gradients are bit-identical (asserted exactly). ``torch.compile``
fuses elementwise work and may reorder reductions: the loss is compared to 1e-4 relative and the gradients to
1e-3 of each tensor's largest entry (fp32), the slow tier.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

import cosmos.models.blocks as blocks
from cosmos.training.config import ModelConfig
from cosmos.training.pretrain import build_trainer, run_fingerprint
from tests.training.test_ddp_parity import OPTIM, TRAIN, switches_for


def _trainer(out, shards, method="cosmos", model=ModelConfig("cosmos-tiny"), **train_changes):
    return build_trainer(out_dir=out, shard_dir=shards, seed=0, model=model, optim=OPTIM,
                         train=dataclasses.replace(TRAIN, **train_changes), switches=switches_for(method))


def _step(trainer, batch) -> tuple[dict, dict]:
    bare = getattr(trainer.student, "module", trainer.student)
    losses = trainer.train_step(batch)
    return losses, {n: p.grad.clone() for n, p in bare.named_parameters() if p.grad is not None}


def _batch(trainer) -> dict:
    batch = next(iter(trainer.loader.epoch(0)))
    batch.pop("worker"), batch.pop("bad_samples")
    return batch


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("method", ["cosmos", "silc"])
def test_grad_checkpointing_gives_the_same_gradients(method, fused, tiny_shards, tmp_path, monkeypatch):
    model = ModelConfig("cosmos-tiny", fused_blocks=fused, trim_vision=fused)
    plain = _trainer(tmp_path / "plain", tiny_shards, method, model)
    batch = _batch(plain)
    want_losses, want = _step(plain, batch)

    calls = []
    real = blocks.checkpoint
    monkeypatch.setattr(blocks, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    checkpointed = _trainer(tmp_path / "ckpt", tiny_shards, method, dataclasses.replace(model, grad_checkpointing=True))
    assert checkpointed.student.transformer.grad_checkpointing and checkpointed.student.visual.transformer.grad_checkpointing
    got_losses, got = _step(checkpointed, batch)
    if fused:  # the fused blocks checkpoint through cosmos.models.blocks; the stock ones through OpenCLIP's
        assert calls, "no block was checkpointed"
    assert got_losses == want_losses
    assert got.keys() == want.keys()
    assert [n for n in want if not torch.equal(got[n], want[n])] == []
    # An execution switch: a run may resume with it flipped.
    fingerprint = dict(seed=0, optim=OPTIM, train=TRAIN, switches=switches_for(method))
    assert run_fingerprint(model=model, **fingerprint) == run_fingerprint(
        model=dataclasses.replace(model, grad_checkpointing=True), **fingerprint)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_compiled_step_gives_the_same_loss_and_gradients(tiny_shards, tmp_path):
    eager = _trainer(tmp_path / "eager", tiny_shards)
    batch = _batch(eager)
    want_losses, want = _step(eager, batch)
    compiled = _trainer(tmp_path / "compiled", tiny_shards, compile=True)
    assert compiled.student._compiled_call_impl is not None and compiled.teacher.module._compiled_call_impl is not None
    assert compiled.student.state_dict().keys() == eager.student.state_dict().keys()  # names untouched
    got_losses, got = _step(compiled, batch)
    for term, value in want_losses.items():
        assert got_losses[term] == pytest.approx(value, rel=1e-4), term
    assert got.keys() == want.keys()
    for name, grad in want.items():
        torch.testing.assert_close(got[name], grad, atol=1e-3 * grad.abs().max().item() + 1e-12, rtol=0, msg=name)
