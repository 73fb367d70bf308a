"""Model sources (our folder, released file, OpenCLIP) and a released-format file evaluated end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch

from cosmos.eval import runner
from cosmos.eval.sources import fetch_release, load_eval_models, load_openclip, resolve_checkpoint
from cosmos.models import CheckpointError, load_checkpoint_file


def test_release_file_loads_student_without_module_prefix_and_teacher(release_ckpt):
    ckpt = load_checkpoint_file(release_ckpt)
    models = load_eval_models({"kind": "cosmos_release", "path": str(release_ckpt)}, model_name="cosmos-tiny",
                              weights="both")
    assert list(models) == ["student", "teacher"]
    assert torch.equal(models["student"].model.visual.proj, ckpt["student"]["module.visual.proj"])
    assert torch.equal(models["teacher"].model.visual.proj, ckpt["teacher"]["visual.proj"])
    assert not models["teacher"].model.training and models["teacher"].image_size == 32


def test_checkpoint_folder_resolution(tmp_path, release_ckpt):
    (tmp_path / "step-00000002.pt").write_bytes(release_ckpt.read_bytes())
    (tmp_path / "step-00000010.pt").write_bytes(release_ckpt.read_bytes())
    assert resolve_checkpoint(tmp_path).name == "step-00000010.pt"
    (tmp_path / "final.pt").write_bytes(release_ckpt.read_bytes())
    assert resolve_checkpoint(tmp_path).name == "final.pt"
    models = load_eval_models({"kind": "checkpoint", "path": str(tmp_path)}, model_name="cosmos-tiny",
                              weights="teacher")
    assert list(models) == ["teacher"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nope")


def test_architecture_mismatch_names_keys(release_ckpt):
    with pytest.raises(CheckpointError, match="shape-mismatched key"):
        load_eval_models({"kind": "checkpoint", "path": str(release_ckpt)}, model_name="cosmos-small",
                         weights="teacher")


def test_release_download_offline_is_a_clear_error(monkeypatch):
    import huggingface_hub

    def offline(**kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(RuntimeError, match="could not fetch cosmos_vitb16_cc3m.pt from the Hugging Face repo"):
        fetch_release("cosmos_vitb16_cc3m.pt")


def test_openclip_local_state_dict(tmp_path, tiny_raw):
    import open_clip
    from cosmos.eval.sources import _register_cosmos_config

    _register_cosmos_config("cosmos-tiny")
    torch.manual_seed(1)
    ref = open_clip.create_model("cosmos-tiny")
    path = tmp_path / "clip_tiny.pt"
    torch.save({"state_dict": ref.state_dict()}, path)
    em = load_openclip("cosmos-tiny", str(path))["openclip"]
    assert torch.equal(em.model.visual.proj, ref.visual.proj) and not em.is_cosmos
    sd = ref.state_dict()
    sd.pop("visual.proj")
    torch.save(sd, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="visual.proj"):
        load_openclip("cosmos-tiny", str(tmp_path / "broken.pt"))


def test_openclip_refuses_a_cosmos_file(release_ckpt):
    with pytest.raises(CheckpointError, match="COSMOS checkpoint"):
        load_openclip("cosmos-tiny", str(release_ckpt))


def _in_range(d):
    return all(0 <= v <= 100 for k, v in d.items() if "R@" in k or k in ("top1", "top5", "mIoU"))


def test_release_file_end_to_end(tmp_path, eval_cfg):
    ret = runner.run_retrieval(eval_cfg, "cosmos-tiny", tmp_path)
    assert {"student", "teacher", "chance", "source"} <= set(ret)
    assert ret["teacher"]["images"] == 12 and ret["teacher"]["captions"] == 60 and _in_range(ret["student"])
    assert ret["student"]["image_to_text_R@1"] != ret["teacher"]["image_to_text_R@1"] or \
        ret["student"]["text_to_image_mean_rank"] != ret["teacher"]["text_to_image_mean_rank"]
    assert (tmp_path / "cross_attention_student.png").stat().st_size > 1000

    cls = runner.run_classification(eval_cfg, "cosmos-tiny", tmp_path)
    assert cls["teacher"]["synthetic_objects"]["classes"] == 12 and cls["teacher"]["synthetic_scenes"]["classes"] == 6
    assert cls["chance"]["synthetic_objects"]["top1"] == pytest.approx(100 / 12)
    assert cls["chance"]["synthetic_scenes"]["top5"] == pytest.approx(500 / 6)
    for name in ("synthetic_objects", "synthetic_scenes"):
        assert (tmp_path / f"teacher_{name}_per_class.csv").read_text().splitlines()[0] == "class,images,top1,top5"

    seg = runner.run_segmentation(eval_cfg, "cosmos-tiny", tmp_path)
    assert list(seg["source"]["evaluated"]) == ["teacher"]
    for bench in ("synthetic_bg", "synthetic_stuff"):
        m = seg["teacher"][bench]
        assert m["images"] == 10 and not math.isnan(m["mIoU"]) and _in_range(m)
        assert (tmp_path / f"teacher_{bench}_overlays.png").exists()
        assert (tmp_path / f"teacher_{bench}_per_class.csv").exists()

    comp = runner.run_compositional(eval_cfg, "cosmos-tiny", tmp_path)
    assert set(comp["teacher"]) == {"replace_att", "replace_obj", "swap_att", "mean", "suppression"}


def test_stage_writes_metrics_and_run_info(tmp_path, monkeypatch, eval_cfg):
    monkeypatch.chdir(tmp_path)
    params = {"eval": eval_cfg, "model": {"name": "cosmos-tiny"}, "seed": 0}
    runner.stage_main(params, "compositional", runner.run_compositional)
    metrics = json.loads((tmp_path / "reports/metrics/eval_compositional.json").read_text())
    assert metrics["chance"]["mean"] == 50.0 and "student" in metrics
    info = json.loads((tmp_path / "runs/eval/compositional/run_info.json").read_text())
    assert info["stage"] == "eval_compositional"


def test_classification_skips_a_set_switched_off_and_refuses_none(tmp_path, eval_cfg):
    eval_cfg["weights"] = "teacher"
    eval_cfg["classification"]["datasets"]["synthetic_objects"] = None
    cls = runner.run_classification(eval_cfg, "cosmos-tiny", tmp_path)
    assert list(cls["teacher"]) == ["synthetic_scenes"] and list(cls["chance"]) == ["synthetic_scenes"]
    eval_cfg["classification"]["datasets"]["synthetic_scenes"] = None
    with pytest.raises(ValueError, match="names no set"):
        runner.run_classification(eval_cfg, "cosmos-tiny", tmp_path)


def test_item_scores_reproduce_every_metric(tmp_path, eval_cfg):
    """The per-item scores behind the report's intervals give back each metric exactly."""
    from cosmos.report.intervals import ItemScores

    eval_cfg["weights"] = "teacher"
    for fn, task in ((runner.run_retrieval, "retrieval"), (runner.run_classification, "classification"),
                     (runner.run_segmentation, "segmentation"), (runner.run_compositional, "compositional")):
        items: dict[str, ItemScores] = {}
        result = fn(eval_cfg, "cosmos-tiny", tmp_path, items)
        assert items, task
        for path, scores in items.items():
            node = result
            for part in path.split("."):
                node = node[part]
            assert scores.value() == pytest.approx(node, abs=1e-5), (task, path)  # metrics are fp32
        if task == "retrieval":
            assert {"teacher.image_to_text_R@1", "teacher.text_to_image_R@10"} <= set(items)
            assert items["teacher.image_to_text_R@1"].n_items == 12
        if task == "segmentation":
            assert items["teacher.synthetic_bg.mIoU"].num.shape == (10, 13)
        if task == "compositional":
            sup = result["teacher"]["suppression"]
            assert sup["gap_obj"] == pytest.approx(sup["dominant_obj"] - sup["minor_obj"])
            assert result["chance"]["suppression"]["minor_pos"] == 50.0
            assert "teacher.suppression.minor_obj" in items and "teacher.mean" in items
