"""The training step and loop: loss falls, non-finite losses fail loudly, a killed run resumes bit-exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cosmos.method import DistillSwitches
from cosmos.training.checkpoint import CheckpointDir, CheckpointError
from cosmos.training.config import ModelConfig, OptimConfig, TrainConfig
from cosmos.training.loop import NonFiniteLossError
from cosmos.training.pretrain import build_trainer

SWITCHES = DistillSwitches(global_crop_size=32, local_crop_size=16, local_crops=2, num_captions=4)
OPTIM = OptimConfig(lr=1e-3, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.1, warmup_steps=1)


def _train(**changes) -> TrainConfig:
    base = dict(batch_size=8, epochs=2, num_workers=0, precision="fp32", data_fraction=0.5, shuffle_buffer=16,
                shuffle_initial=4, checkpoint_every=0, keep_checkpoints=2, log_every=1, resume="auto", max_steps=0,
                device="cpu")
    return TrainConfig(**{**base, **changes})


def _trainer(out, shards, **changes):
    return build_trainer(out_dir=out, shard_dir=shards, seed=3, model=ModelConfig("cosmos-tiny"), optim=OPTIM,
                         train=_train(**changes), switches=SWITCHES)


def _state(trainer) -> dict[str, torch.Tensor]:
    return {**{f"s.{k}": v for k, v in trainer.student.state_dict().items()},
            **{f"t.{k}": v for k, v in trainer.teacher.state_dict().items()}}


def test_loss_falls_when_overfitting_one_batch(tiny_shards, tmp_path):
    trainer = _trainer(tmp_path, tiny_shards, resume="none")
    trainer.lr = np.full_like(trainer.lr, 1e-3)
    batch = next(iter(trainer.loader.epoch(0)))
    batch.pop("worker"), batch.pop("bad_samples")
    losses = [trainer.train_step(batch)["loss"] for _ in range(trainer.total_steps)]
    assert losses[-1] < 0.8 * losses[0], losses


def test_non_finite_loss_names_the_step_and_every_term(tiny_shards, tmp_path):
    trainer = _trainer(tmp_path, tiny_shards, resume="none")
    trainer.objective = lambda student, teacher, batch, step: {
        "clip_loss": student.logit_scale * float("nan"), "distill_loss": student.logit_scale * 0 + 2.5}
    trainer.position.step = 2
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 2 .*clip_loss=nan, distill_loss=2.5; "
                                                 r"the last good checkpoint is kept: lower optim.lr"):
        trainer.train_step({})


def test_a_non_finite_step_between_checks_is_named_and_never_saved(tiny_shards, tmp_path):
    # The loop reads the device only at log_every and before a checkpoint: step 3's NaN is found at the
    # step-4 checkpoint, named with its terms, and the newest checkpoint stays step 2's.
    trainer = _trainer(tmp_path, tiny_shards, log_every=100, checkpoint_every=2)
    plain = trainer.objective

    def objective(student, teacher, batch, step):
        terms = plain(student, teacher, batch, step)
        return {**terms, "clip_loss": terms["clip_loss"] * float("nan")} if step == 2 else terms

    trainer.objective = objective
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 2 \(epoch 0\): loss=nan = clip_loss=nan, "
                                                 r"distill_loss=[0-9.]+;"):
        trainer.fit()
    assert [p.name for p in CheckpointDir(tmp_path).paths()] == ["step-00000002.pt"]


def test_killed_run_resumes_bit_identically(tiny_shards, tmp_path):
    full = _trainer(tmp_path / "full", tiny_shards)
    assert full.loader.batches_per_epoch == 3 and full.total_steps == 6
    full.fit()

    # Stop mid-epoch 2 (step 4 = epoch 1, batch 1), as if killed right after that checkpoint was written.
    first = _trainer(tmp_path / "cut", tiny_shards, max_steps=4)
    position = first.fit()
    assert (position.step, position.epoch, position.batches) == (4, 1, 1)
    torch.manual_seed(999)  # a resumed process starts from an unrelated RNG state
    resumed = _trainer(tmp_path / "cut", tiny_shards)
    assert (resumed.position.step, resumed.position.epoch, resumed.position.batches) == (4, 1, 1)
    resumed.fit()

    expected, actual = _state(full), _state(resumed)
    assert expected.keys() == actual.keys()
    different = [k for k in expected if not torch.equal(expected[k], actual[k])]
    assert not different, different[:5]
    opt_a, opt_b = full.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(opt_a[i]["exp_avg_sq"], opt_b[i]["exp_avg_sq"]) for i in opt_a)


def test_checkpoint_layout_and_resume_guard(tiny_shards, tmp_path):
    trainer = _trainer(tmp_path, tiny_shards, max_steps=1, checkpoint_every=1)
    trainer.fit()
    path, ckpt = CheckpointDir(tmp_path).load_latest(trainer.fingerprint)
    assert path.name == "step-00000001.pt"
    for key in ("epoch", "name", "student", "teacher", "optimizer", "step", "data", "schedules", "rng"):
        assert key in ckpt, key
    assert ckpt["name"] == "cosmos-cosmos-tiny" and ckpt["data"] == {"epoch": 0, "batches": 1}
    assert torch.equal(ckpt["schedules"]["lr"], torch.from_numpy(trainer.lr))
    with pytest.raises(RuntimeError, match="written by a run with another config"):
        build_trainer(out_dir=tmp_path, shard_dir=tiny_shards, seed=4, model=ModelConfig("cosmos-tiny"),
                      optim=OPTIM, train=_train(), switches=SWITCHES)


def test_resume_falls_back_past_a_corrupt_newest_checkpoint(tiny_shards, tmp_path):
    trainer = _trainer(tmp_path, tiny_shards, max_steps=2, checkpoint_every=1)
    trainer.fit()
    folder = CheckpointDir(tmp_path)
    assert [p.name for p in folder.paths()] == ["step-00000001.pt", "step-00000002.pt"]
    newest = folder.paths()[-1]
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as by a crash outside the atomic rename
    said = []
    path, ckpt = folder.load_latest(trainer.fingerprint, report=said.append)
    assert path.name == "step-00000001.pt" and ckpt["step"] == 1
    assert len(said) == 1 and "skipped 1 newer checkpoint" in said[0] and "step-00000002.pt" in said[0]
    assert said[0].endswith("resuming from step-00000001.pt")
    assert folder.finalize().name == "final.pt" and [p.name for p in folder.paths()] == ["final.pt"]


def test_clip_baseline_trains_without_a_teacher(tiny_shards, tmp_path):
    switches = DistillSwitches(method="clip", image_distill=False, text_distill=False, cross_attn=False,
                               global_crop_size=32, local_crop_size=16, local_crops=2, num_captions=4)
    trainer = build_trainer(out_dir=tmp_path, shard_dir=tiny_shards, seed=0, model=ModelConfig("cosmos-tiny"),
                            optim=OPTIM, train=_train(max_steps=1), switches=switches)
    assert trainer.teacher is None
    trainer.fit()
    _, ckpt = CheckpointDir(tmp_path).load_latest()
    assert ckpt["name"] == "clip-cosmos-tiny"
    assert all(torch.equal(ckpt["student"][k], ckpt["teacher"][k]) for k in ckpt["student"])


@pytest.mark.parametrize("placement", ["reference", "dino"])
def test_ema_update_sits_where_the_switches_say(tiny_shards, tmp_path, placement):
    trainer = build_trainer(out_dir=tmp_path, shard_dir=tiny_shards, seed=0, model=ModelConfig("cosmos-tiny"),
                            optim=OPTIM, train=_train(resume="none"), switches=SWITCHES.replace(ema_placement=placement))
    trainer.momentum = np.zeros_like(trainer.momentum)  # m = 0: the teacher becomes a copy of the student
    before = {k: v.clone() for k, v in trainer.student.state_dict().items()}
    batch = next(iter(trainer.loader.epoch(0)))
    batch.pop("worker"), batch.pop("bad_samples")
    trainer.train_step(batch)
    after = trainer.student.state_dict()
    expected = before if placement == "reference" else after  # reference: pre-step weights (reference 5)
    teacher = trainer.teacher.state_dict()
    # logit scales are clamped after the EMA; every other tensor must match exactly
    assert all(torch.equal(teacher[k], expected[k]) for k in teacher if not k.endswith("logit_scale"))
    assert not torch.equal(before["visual.proj"], after["visual.proj"])


def test_a_failed_checkpoint_write_names_the_cause_and_keeps_the_last_one(tiny_shards, tmp_path, monkeypatch):
    import errno

    trainer = _trainer(tmp_path, tiny_shards, max_steps=1, checkpoint_every=1)
    trainer.fit()
    folder = CheckpointDir(tmp_path)
    before = folder.paths()[-1].read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match=r"step-2 checkpoint .*No space left on device; step-00000001.pt is "
                                              r"intact and train.resume=auto resumes from it\. Free space"):
        folder.save(2, epoch=0, name="x", student={}, teacher={}, optimizer={}, scaler=None, extra={})
    assert [p.name for p in folder.paths()] == ["step-00000001.pt"] and folder.paths()[-1].read_bytes() == before
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
