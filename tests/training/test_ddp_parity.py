"""DDP equals one process, for every method: 2 gloo ranks, each on half of a global batch, against one
process on the whole batch.

Methods: ``clip`` (alt text), ``clip_long``, ``silc``, ``cosmos`` and COSMOS without cross-attention
(``no_cross_attn``), each from its ``conf/distill`` file with the crops and heads shrunk for speed. Both sides
run the Trainer's own ``train_step`` (objective -> sum -> backward -> EMA before ``optimizer.step()`` ->
clamp) on the same three fixed global batches of 8, from the same seeded init, with the project's AdamW param
groups, in fp32.

The relation, derived (tests/method/test_gather_ddp.py checks it on the loss alone). Every loss term is
computed, on every rank, as the global-batch loss L, but only the rank's own rows carry grad: the contrastive
terms gather the other ranks' features without grad (the reference's ``gather_features``, ``--local-loss`` and
``--gather-with-grad`` off), and SiLC's DINO term gathers its per-sample losses the same way. Each sample's
rows therefore have grad on exactly one rank, and there the full dL/dx, so

- the loss is the single-process loss, on every rank;
- a parameter reached through the features (towers, cross-attention, projections, the DINO head) gets
  sum_r dL/dtheta|_r = dL/dtheta before DDP's mean all-reduce, i.e. dL/dtheta / W after it;
- the two temperatures multiply every logit, so every rank computes the full dL/ds and the mean keeps it:
  factor 1;
- AdamW divides the first moment by the root of the second, so a constant per-parameter scale cancels except
  against ``eps``: with ``g/W`` the DDP update equals the single-process update with ``eps*W``. Weights therefore
  agree to float tolerance, not bit-exactly; the test runs AdamW with ``eps=1e-12`` so that an entry whose
  gradient is ~1e-8 does not move by a visibly different fraction of ``lr``;
- an entry whose true gradient is 0 gets a computed gradient of round-off size (~1e-10), which Adam turns into
  a +-lr step of arbitrary sign whenever two runs sum in another order. The key third of each attention
  ``in_proj_bias`` is such an entry (softmax is invariant to a shift shared by all keys; asserted below 1e-7),
  and so, now and then, is an entry of a weight behind a dead unit (SiLC's text tower: one of 16k). Non-zero
  entries whose single-process first-step gradient is below NOISE_FLOOR are therefore left out of the weight
  comparison, and the test asserts that they are fewer than 1 in 1,000.

Asserted per method: losses to 1e-5 on every rank at every step; first-step gradients, per parameter group
(temperatures x1, everything else xW), to 1e-6 + 1e-4 relative; the same set of parameters with a gradient;
student and teacher weights (and SiLC's DINO centre) after one step to 1e-5 (1% of lr), after three steps to
1e-4 with at most 1 entry in 1,000 beyond 1e-5 (ATOL). A gather or DDP bug moves most entries by a sizable
fraction of lr.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

from cosmos.method import DistillSwitches
from cosmos.models.checkpoint_io import strip_module_prefix
from cosmos.training.config import ModelConfig, OptimConfig, TrainConfig
from cosmos.training.distributed import init_distributed
from cosmos.training.pretrain import build_trainer
from tests.conftest import REPO_ROOT

WORLD, GLOBAL_B, STEPS, MOMENTUM = 2, 8, 3, 0.9
COMPARED_AFTER = (1, 3)  # optimizer steps after which weights are compared
# method -> its conf/distill file
METHODS = {"clip": "clip", "clip_long": "clip_long", "silc": "silc", "cosmos": "cosmos",
           "no_cross_attn": "clip_multicrop_imgdistill_textcrop_textdistill"}
OPTIM = OptimConfig(lr=1e-3, betas=(0.9, 0.98), eps=1e-12, weight_decay=0.1, warmup_steps=1, fused=False)
TRAIN = TrainConfig(batch_size=GLOBAL_B, epochs=1, num_workers=0, precision="fp32", data_fraction=1.0,
                    shuffle_buffer=16, shuffle_initial=4, checkpoint_every=0, keep_checkpoints=1, log_every=1,
                    resume="none", max_steps=0, device="cpu")
# Single-process grads equal W x DDP grads, except these, which agree directly.
TEMPERATURES = ("logit_scale", "distill_logit_scale")
NOISE_FLOOR = 1e-8  # |first-step gradient| below which an entry's Adam step has the sign of round-off
# Weight tolerance after each compared step: 1% of one lr step after the first, 10% after three (with at most
# 1 in 1,000 entries beyond 1%): entries whose later gradients are small carry a larger relative round-off,
# which Adam's normalisation passes on (measured: up to 4e-5, 19 of 65k entries).
ATOL = {1: 1e-5, 3: 1e-4}


def switches_for(method: str) -> DistillSwitches:
    """The method's own ``conf/distill`` switches, with 2 local crops, 4 captions and a small DINO head."""
    section = yaml.safe_load((REPO_ROOT / "conf" / "distill" / f"{METHODS[method]}.yaml").read_text())
    switches = DistillSwitches.from_params(section)
    changes: dict = {"global_crop_size": 32, "local_crop_size": 16}
    if switches.multi_crop:
        changes["local_crops"] = 2
    if switches.text_crop:
        changes["num_captions"] = 4
    if switches.method == "silc":
        changes["silc"] = dataclasses.replace(switches.silc, out_dim=256, hidden_dim=64, bottleneck_dim=32)
    return switches.replace(**changes)


def _trainer(method, out_dir, shards, world=None):
    kwargs = {} if world is None else {"world": world}
    # The stock paths (no fused blocks, no text trimming, foreach AdamW): their kernels round differently at
    # batch 4 (a rank) and 8 (one process), and Adam at eps 1e-12 turns that into 3e-5 at step 1. Each
    # speed-up's equality is tested on its own (tests/method/test_speedups.py); this test is about DDP.
    model = ModelConfig("cosmos-tiny", fused_blocks=False, trim_text=False, trim_vision=False,
                        shared_cross_kv=False, math_attention=False)
    trainer = build_trainer(out_dir=out_dir, shard_dir=shards, seed=0, model=model,
                            optim=OPTIM, train=TRAIN, switches=switches_for(method), **kwargs)
    # A visible teacher move per step (the reference's 0.999 would hide a wrong teacher update in round-off).
    trainer.momentum = np.full_like(trainer.momentum, MOMENTUM)
    return trainer


def _half(batch: dict, rank: int, num_captions: int) -> dict:
    """Rank ``rank``'s rows of a global batch: every image view, and every caption block of ``texts``."""
    b = GLOBAL_B // WORLD
    rows = slice(rank * b, (rank + 1) * b)
    texts = batch["texts"]
    per_caption = texts.reshape(num_captions, GLOBAL_B, -1)  # caption-major [k*B, ctx]
    return {"images": [view[rows] for view in batch["images"]],
            "texts": per_caption[:, rows].reshape(-1, texts.shape[-1])}


def _snapshot(trainer) -> dict:
    out = {"student": strip_module_prefix(trainer.student.state_dict())}
    if trainer.teacher is not None:
        out["teacher"] = trainer.teacher.state_dict()
    out["objective"] = trainer.objective.state_dict()  # SiLC's DINO centre; empty for the others
    return {part: {k: v.clone() for k, v in sd.items()} for part, sd in out.items()}


def _run(trainer, batches) -> dict:
    """Train on ``batches``: the losses, the weights after each step in COMPARED_AFTER, first-step gradients."""
    bare = getattr(trainer.student, "module", trainer.student)
    losses, grads, weights = [], {}, {}
    for step, batch in enumerate(batches, start=1):
        losses.append(trainer.train_step(batch))
        grads = grads or {name: p.grad.clone() for name, p in bare.named_parameters() if p.grad is not None}
        if step in COMPARED_AFTER:
            weights[step] = _snapshot(trainer)
    return {"losses": losses, "weights": weights, "grads": grads}


def _worker(rank: int, port: int, method: str, shards: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    world = init_distributed(torch.device("cpu"))
    try:
        trainer = _trainer(method, f"{out}/ckpt", shards, world)
        assert isinstance(trainer.student, torch.nn.parallel.DistributedDataParallel)
        k = switches_for(method).num_captions
        batches = [_half(batch, rank, k) for batch in torch.load(f"{out}/batches.pt", weights_only=True)]
        torch.save(_run(trainer, batches), f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def gloo_rank(rank: int, port: int, world_size: int = WORLD):
    """This spawned process as gloo rank ``rank`` of ``world_size`` on one thread; yields the ``World``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    world = init_distributed(torch.device("cpu"))
    try:
        yield world
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _key_bias(name: str, tensor: torch.Tensor) -> slice | None:
    """The key slice of an attention ``in_proj_bias`` ([q | k | v]): its true gradient is exactly 0."""
    if not name.endswith("in_proj_bias"):
        return None
    width = tensor.shape[0] // 3
    return slice(width, 2 * width)


def _signal(name: str, tensor: torch.Tensor, grads: dict) -> torch.Tensor:
    """``tensor``'s entries whose first-step gradient is above round-off (all of them for buffers)."""
    grad = grads.get(name)
    if grad is None:
        return tensor
    keep = (grad == 0) | (grad.abs() >= NOISE_FLOOR)
    keys = _key_bias(name, grad)
    if keys is not None:
        keep[keys] = False
    return tensor[keep]


def _max_diff(a: dict, b: dict, grads: dict) -> float:
    return max(((_signal(k, a[k], grads) - _signal(k, b[k], grads)).abs().max().item() for k in a
                if a[k].is_floating_point() and _signal(k, a[k], grads).numel()), default=0.0)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("method", list(METHODS))
def test_two_gloo_ranks_match_one_process_on_the_same_global_batch(method, tiny_shards, tmp_path):
    single = _trainer(method, tmp_path / "single", tiny_shards)
    initial = {k: v.clone() for k, v in single.student.state_dict().items()}
    batches = []
    for batch in single.loader.epoch(0):
        batch.pop("worker"), batch.pop("bad_samples")
        batches.append(batch)
        if len(batches) == STEPS:
            break
    assert len(batches) == STEPS and batches[0]["images"][0].shape[0] == GLOBAL_B
    torch.save(batches, tmp_path / "batches.pt")
    expected = _run(single, batches)

    mp.spawn(_worker, args=(_free_port(), method, str(tiny_shards), str(tmp_path)), nprocs=WORLD, join=True)
    terms = {"loss", *single.objective.switches.loss_names}
    report = {}
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for step, (want, have) in enumerate(zip(expected["losses"], got["losses"], strict=True)):
            assert want.keys() == have.keys() == terms, (want.keys(), terms)
            for term in want:
                assert have[term] == pytest.approx(want[term], abs=1e-5), (rank, step, term)
        # First-step gradients (identical weights on both sides), per parameter group, after DDP's mean.
        assert got["grads"].keys() == expected["grads"].keys()
        for name, grad in expected["grads"].items():
            scale = 1 if name in TEMPERATURES else WORLD
            torch.testing.assert_close(got["grads"][name] * scale, grad, atol=1e-6, rtol=1e-4, msg=name)
        # Weights, on the entries whose gradient is above round-off (Adam turns round-off into +-lr of any sign).
        grads = expected["grads"]
        for step in COMPARED_AFTER:
            want_parts, have_parts = expected["weights"][step], got["weights"][step]
            assert want_parts.keys() == have_parts.keys()
            for part, want in want_parts.items():
                assert have_parts[part].keys() == want.keys()
                far, total = 0, 0
                for name in want:
                    have_t, want_t = _signal(name, have_parts[part][name], grads), _signal(name, want[name], grads)
                    torch.testing.assert_close(have_t, want_t, atol=ATOL[step], rtol=0,
                                               msg=lambda m, s=step, p=part, n=name: f"after step {s}: {p}.{n}: {m}")
                    if want_t.is_floating_point():
                        far += int(((have_t - want_t).abs() > ATOL[1]).sum())
                        total += want_t.numel()
                assert far <= total / 1000, f"after step {step}: {far} of {total} {part} entries differ by > {ATOL[1]}"
                report[f"{part}@{step}"] = max(report.get(f"{part}@{step}", 0.0),
                                               _max_diff(have_parts[part], want, grads))
        report["loss"] = max(report.get("loss", 0.0), *(abs(h["loss"] - w["loss"]) for w, h in
                                                         zip(expected["losses"], got["losses"])))
        report["grad"] = max(report.get("grad", 0.0), *(
            (got["grads"][n] * (1 if n in TEMPERATURES else WORLD) - g).abs().max().item()
            for n, g in expected["grads"].items()))
    print(f"ddp-vs-single {method}: " + ", ".join(f"{k} {v:.1e}" for k, v in sorted(report.items())))
    key_bias_grads = [g[_key_bias(n, g)].abs().max().item() for n, g in expected["grads"].items() if _key_bias(n, g)]
    assert len(key_bias_grads) >= 7 and max(key_bias_grads) < 1e-7  # 7 transformer blocks (+ 2 cross-attn pools)
    noise = sum(int(((g != 0) & (g.abs() < NOISE_FLOOR)).sum()) for g in expected["grads"].values())
    keys = sum(g[_key_bias(n, g)].numel() for n, g in expected["grads"].items() if _key_bias(n, g))
    entries = sum(g.numel() for g in expected["grads"].values())
    assert noise - keys < entries / 1000, (noise, keys, entries)  # round-off entries beyond the key biases are rare
    moved = max((expected["weights"][STEPS]["student"][k] - initial[k]).abs().max().item() for k in initial)
    assert moved > 1e-3  # the run moved the weights far beyond the tolerance: the comparison is not vacuous
