"""Checkpoint I/O in the reference layout (spec 2.1): strict round trips, pickle refusal, readable key errors."""

import argparse
import os

import pytest
import torch

from cosmos.models import (
    CheckpointError,
    build_model,
    export_reference_checkpoint,
    load_checkpoint_file,
    load_cosmos_weights,
    strip_module_prefix,
)
from tests.malicious import Marker


class _Custom:
    pass


def _tiny(seed):
    torch.manual_seed(seed)
    return build_model("cosmos-tiny")


def _ddp_prefixed(state_dict):
    return {f"module.{k}": v for k, v in state_dict.items()}


def _assert_same_tensors(model, state_dict):
    got = model.state_dict()
    assert got.keys() == state_dict.keys()
    assert all(torch.equal(got[k], state_dict[k]) for k in got)


def test_reference_layout_written_by_torch_save_round_trips(tmp_path):
    student, teacher = _tiny(0), _tiny(1)
    path = tmp_path / "epoch_1.pt"
    torch.save({"epoch": 1, "name": "run", "student": _ddp_prefixed(student.state_dict()),
                "teacher": teacher.state_dict(), "optimizer": {}}, path)
    fresh_student = load_cosmos_weights(_tiny(2), path, which="student")
    fresh_teacher = load_cosmos_weights(_tiny(3), path, which="teacher")
    _assert_same_tensors(fresh_student, student.state_dict())
    _assert_same_tensors(fresh_teacher, teacher.state_dict())


def test_vit_b16_reference_layout_loads_strictly():
    torch.manual_seed(0)
    source = build_model("ViT-B-16")
    ckpt = {"epoch": 32, "student": _ddp_prefixed(source.state_dict()), "teacher": source.state_dict()}
    torch.manual_seed(1)
    target = load_cosmos_weights(build_model("ViT-B-16"), ckpt, which="student")
    _assert_same_tensors(target, source.state_dict())


def test_export_is_atomic_reference_layout_and_weights_only_safe(tmp_path):
    student, teacher = _tiny(0), _tiny(1)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-3)
    student(torch.randn(2, 3, 32, 32), torch.randint(0, 49408, (2, 24))).get("image_features").sum().backward()
    optimizer.step()
    path = export_reference_checkpoint(
        tmp_path / "ckpt" / "epoch_2.pt", _ddp_prefixed(student.state_dict()), teacher.state_dict(),
        epoch=2, name="tiny", optimizer_state=optimizer.state_dict(), extra={"step": 10},
    )
    assert os.listdir(path.parent) == ["epoch_2.pt"]  # no temporary file left behind
    ckpt = load_checkpoint_file(path)
    assert set(ckpt) == {"epoch", "name", "student", "teacher", "optimizer", "step"}
    assert ckpt["epoch"] == 2 and ckpt["name"] == "tiny"
    assert all(k.startswith("module.") for k in ckpt["student"])
    assert not any(k.startswith("module.") for k in ckpt["teacher"])
    _assert_same_tensors(load_cosmos_weights(_tiny(2), ckpt, "teacher"), teacher.state_dict())
    with pytest.raises(ValueError, match="reserved"):
        export_reference_checkpoint(tmp_path / "x.pt", {}, {}, epoch=0, name="x", extra={"teacher": 1})


@pytest.mark.parametrize("payload", [argparse.Namespace(lr=1e-3), _Custom()])
def test_pickle_bearing_checkpoint_is_refused(tmp_path, payload):
    path = tmp_path / "unsafe.pt"
    torch.save({"epoch": 1, "args": payload, "student": {}}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint_file(path)
    message = str(err.value)
    assert str(path) in message and "non-tensor pickled objects" in message
    assert "safety" in message and "re-save" in message
    assert type(payload).__name__ in message


def test_key_errors_name_missing_unexpected_and_mismatched_keys():
    state = dict(_tiny(0).state_dict())
    del state["text_token_mapping.bias"]
    state["bogus.weight"] = torch.zeros(1)
    state["distill_logit_scale"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        load_cosmos_weights(_tiny(1), {"student": state}, which="student")
    message = str(err.value)
    assert "1 missing key(s): text_token_mapping.bias" in message
    assert "1 unexpected key(s): bogus.weight" in message
    assert "distill_logit_scale (checkpoint (1,) vs model ())" in message


def test_open_clip_layout_is_rejected_with_hint():
    with pytest.raises(CheckpointError, match="state_dict"):
        load_cosmos_weights(_tiny(0), {"state_dict": {}, "epoch": 1}, which="teacher")


def test_strip_module_prefix_only_strips_leading_prefix():
    stripped = strip_module_prefix({"module.visual.proj": 1, "visual.module.x": 2})
    assert list(stripped) == ["visual.proj", "visual.module.x"]


def test_malicious_pickle_never_runs_and_the_refusal_is_short(tmp_path):
    marker, path = tmp_path / "PWNED", tmp_path / "evil.pt"
    torch.save({"student": Marker(str(marker))}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint_file(path)
    message = str(err.value)
    assert not marker.exists()
    assert "\n" not in message and "system" in message and "In PyTorch 2.6" not in message
