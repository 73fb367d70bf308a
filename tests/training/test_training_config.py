"""Config validation runs before any work and names the offending key."""

from __future__ import annotations

import pytest
import torch

from cosmos.training.config import (LauncherConfig, ModelConfig, OptimConfig, TrainConfig, typed_section,
                                    validate_train)
from cosmos.training.precision import Precision

TRAIN = dict(batch_size=64, epochs=1, num_workers=0, precision="bf16", data_fraction=1.0, shuffle_buffer=100,
             shuffle_initial=10, checkpoint_every=0, keep_checkpoints=2, log_every=1, resume="auto", max_steps=0,
             device="cpu", tune_malloc=True, val_every=0, val_images=200, val_root=None, accum_steps=1,
             local_loss=False, gather_with_grad=False, compile=False)
OPTIM = dict(lr=5e-4, betas=[0.9, 0.98], eps=1e-8, weight_decay=0.5, warmup_steps=1, fused=True)
LAUNCHER = dict(name="local", timeout_min=10, nodes=1, tasks_per_node=1, cpus_per_task=2, gpus_per_node=0,
                partition="", account="", qos="", constraint="", sbatch_extra={})


def _validate(train=None, optim=None, launcher=None):
    validate_train(typed_section(TrainConfig, {**TRAIN, **(train or {})}, "train"),
                   typed_section(OptimConfig, {**OPTIM, **(optim or {})}, "optim"),
                   typed_section(LauncherConfig, {**LAUNCHER, **(launcher or {})}, "launcher"))


def test_valid_sections_build_typed_configs():
    optim = typed_section(OptimConfig, OPTIM, "optim")
    assert optim.betas == (0.9, 0.98) and isinstance(optim.lr, float)
    model = typed_section(ModelConfig, {"name": "cosmos-tiny", "fused_blocks": True, "trim_text": True,
                                        "trim_vision": False, "shared_cross_kv": True,
                                        "math_attention": True, "grad_checkpointing": False}, "model")
    assert model.name == "cosmos-tiny" and model.speedups() == {
        "fused_blocks": True, "trim_text": True, "trim_vision": False, "shared_cross_kv": True,
        "math_attention": True}
    _validate()


def test_unknown_and_missing_keys_are_named():
    with pytest.raises(ValueError, match=r"train: unknown key\(s\) \['batchsize'\]"):
        typed_section(TrainConfig, {**TRAIN, "batchsize": 3}, "train")
    with pytest.raises(ValueError, match=r"optim: missing key\(s\) \['eps'\]"):
        typed_section(OptimConfig, {k: v for k, v in OPTIM.items() if k != "eps"}, "optim")
    with pytest.raises(ValueError, match="model: missing section"):
        typed_section(ModelConfig, None, "model")


@pytest.mark.parametrize("key, value, message", [
    ("batch_size", "64", r"train.batch_size='64' must be of type int"),
    ("batch_size", 6.0, r"train.batch_size=6.0 must be of type int"),
    ("epochs", True, r"train.epochs=True must be of type int"),
    ("data_fraction", "all", r"train.data_fraction='all' must be of type float"),
])
def test_wrong_types_are_named(key, value, message):
    with pytest.raises(ValueError, match=message):
        typed_section(TrainConfig, {**TRAIN, key: value}, "train")


def test_betas_must_be_a_pair():
    with pytest.raises(ValueError, match=r"optim.betas=\[0.9\] must be a list of 2 values"):
        typed_section(OptimConfig, {**OPTIM, "betas": [0.9]}, "optim")


@pytest.mark.parametrize("section, change, message", [
    ("launcher", {"tasks_per_node": 3}, "train.batch_size=64 is not divisible by the world size 3"),
    ("train", {"precision": "fp8"}, "train.precision='fp8' must be one of"),
    ("train", {"data_fraction": 0.0}, r"train.data_fraction=0.0 must lie in \(0, 1\]"),
    ("train", {"device": "tpu"}, "train.device='tpu'"),
    ("optim", {"lr": -1.0}, "optim.lr=-1.0 must be > 0"),
    ("launcher", {"name": "k8s"}, "launcher.name='k8s'"),
    ("train", {"accum_steps": 0}, "train.accum_steps=0 must be >= 1"),
    ("train", {"accum_steps": 3}, r"train.accum_steps=3 must divide the per-rank batch 64 \(train.batch_size / world size\)"),
])
def test_bad_values_are_named(section, change, message):
    with pytest.raises(ValueError, match=message):
        _validate(**{section: change})


def test_fp16_on_cpu_is_a_clear_error():
    with pytest.raises(ValueError, match="train.precision=fp16 needs a CUDA device"):
        Precision("fp16", torch.device("cpu"))
    assert Precision("bf16", torch.device("cpu")).state_dict() is None


@pytest.mark.parametrize("group", ["model", "optim", "train", "launcher", "profile"])
def test_every_training_group_option_composes_and_validates(group):
    import yaml

    from cosmos.config.compose import compose_params
    from cosmos.training.pretrain import parse_sections
    from tests.conftest import REPO_ROOT

    for option in sorted(p.stem for p in (REPO_ROOT / "conf" / group).glob("*.yaml")):
        sections = parse_sections(yaml.safe_load(compose_params([f"{group}={option}"])))
        assert sections["train"].batch_size % (sections["launcher"].nodes * sections["launcher"].tasks_per_node) == 0


def test_parse_sections_names_a_bad_key_before_any_work():
    import yaml

    from cosmos.config.compose import compose_params
    from cosmos.training.pretrain import parse_sections

    params = yaml.safe_load(compose_params(["launcher.tasks_per_node=3", "train.batch_size=64"]))
    with pytest.raises(ValueError, match="train.batch_size=64 is not divisible by the world size 3"):
        parse_sections(params)
    params = yaml.safe_load(compose_params())
    params["train"]["lr"] = 0.1
    with pytest.raises(ValueError, match=r"train: unknown key\(s\) \['lr'\]"):
        parse_sections(params)
