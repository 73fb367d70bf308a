"""Eval fixtures: a released-COSMOS-format checkpoint with random cosmos-tiny weights, and an eval config."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from cosmos.models import build_model, export_reference_checkpoint


@pytest.fixture(scope="session")
def release_ckpt(tmp_path_factory) -> Path:
    """Reference layout (spec 2.1): student keys carry DDP's ``module.``; the teacher differs from it."""
    torch.manual_seed(0)
    student = build_model("cosmos-tiny").state_dict()
    teacher = build_model("cosmos-tiny").state_dict()
    path = tmp_path_factory.mktemp("release") / "cosmos_tiny_random.pt"
    export_reference_checkpoint(path, {f"module.{k}": v for k, v in student.items()}, teacher, epoch=32,
                                name="cosmos_tiny_random", optimizer_state={"state": {}, "param_groups": []})
    return path


@pytest.fixture()
def eval_cfg(tiny_raw, release_ckpt) -> dict:
    """The shape of conf/eval/synthetic.yaml, pointed at the tiny benchmark and the release-format file."""
    raw = Path(tiny_raw)
    bench = {"short_side": 64, "crop": 32, "stride": 16}
    return copy.deepcopy({
        "name": "synthetic",
        "source": {"kind": "cosmos_release", "path": str(release_ckpt), "hf_repo": "sankim2/cosmos",
                   "model": "cosmos-tiny"},
        "weights": "both",
        "device": "auto",
        "batch_size": 16,
        "text_batch_size": 256,
        "launcher": {"name": None, "timeout_min": None},
        "retrieval": {"format": "coco", "root": str(raw / "coco"), "image_root": None, "split": "test"},
        "classification": {"datasets": {
            f"synthetic_{kind}": {"root": str(raw / "classification" / kind / "val"),
                                  "classnames": str(raw / "classification" / kind / "classnames.txt"),
                                  "templates": str(raw / "classification" / kind / "templates.json")}
            for kind in ("objects", "scenes")}},
        "segmentation": {"weights": "teacher", "csa": True, "templates": "openai", "pictures": 2,
                         "batch_images": 16, "window_batch": None,
                         "benchmarks": {
                             "synthetic_bg": {"root": str(raw / "voc_bg"), **bench, "logit_scale": 65,
                                              "prob_thd": 0.1, "area_thd": 0.1},
                             "synthetic_stuff": {"root": str(raw / "voc_stuff"), **bench}}},
        "compositional": {"root": str(raw / "sugarcrepe"), "image_dir": "images",
                          "types": ["replace_att", "replace_obj", "swap_att"],
                          "suppression": ["dominant_obj", "minor_obj", "dominant_att", "minor_att", "minor_pos"]},
        "pictures": {"cross_attention": 2},
    })
