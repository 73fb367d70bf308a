"""End-to-end tier: `dvc repro` of the stages on the debug profile, in a scratch copy of the repository."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from cosmos.ablation.experiments import read_dvc_experiments, render_experiments
from cosmos.config.compose import compose_params
from tests.pipeline_repo import dvc, env, scratch_repo

pytestmark = pytest.mark.slow

def _report_rows(path: Path) -> dict[str, dict[str, str]]:
    """CSV rows by variant label, without the " [n seeds]" suffix."""
    with open(path, newline="") as f:
        return {row["variant"].rsplit(" [", 1)[0]: row for row in csv.DictReader(f)}


def test_whole_pipeline_on_the_debug_profile(debug_pipeline):
    """`dvc repro` runs every stage; the report holds every expected variant with finite metrics; a second
    `dvc repro` runs nothing; `dvc exp run -S distill.text_crop=false` changes only the base row."""
    repo, first = debug_pipeline.repo, debug_pipeline.first
    for stage in ("download", "shard", "pretrain", "eval_retrieval", "eval_classification", "eval_seg",
                  "eval_compositional", "ablation_train@clip", "ablation_eval@silc", "ablation_seed_train@base-1",
                  "ablation_seed_eval@base-1", "ablation_tables"):
        assert f"Running stage '{stage}'" in first.stdout, stage

    raw, shards = repo / "data" / "synthetic" / "raw", repo / "data" / "synthetic" / "shards"
    for path in ("coco/annotations/captions_val2017.json", "classification/objects/classnames.txt", "classification/scenes/templates.json",
                 "voc_bg/ImageSets/Segmentation/val.txt", "voc_stuff/cls_synthetic_stuff.txt",
                 "sugarcrepe/swap_att.json", "pretrain/annotations.csv", "run_info.json"):
        assert (raw / path).exists(), path
    manifest = json.loads((shards / "manifest.json").read_text())
    assert manifest["num_samples"] == 320 and manifest["num_shards"] == 8
    info = json.loads((shards / "run_info.json").read_text())
    assert info["stage"] == "shard" and len(info["git"]["commit"]) == 40
    assert (repo / "runs" / "pretrain" / "checkpoints" / "final.pt").exists()

    report = repo / "reports" / "ablation"
    summary = json.loads((repo / "reports" / "metrics" / "ablation.json").read_text())
    assert summary["missing"] == [] and summary["runs_found"] == 6
    rows = _report_rows(report / "baselines.csv")
    expected = {"CLIP (alt text)", "SiLC", "base (cosmos)"}
    for label in expected:
        values = [float(v) for k, v in rows[label].items() if k != "variant"]
        assert values and all(math.isfinite(v) for v in values), (label, rows[label])
        assert "Comp. acc lo" in rows[label]
    with open(report / "baselines.csv", newline="") as f:
        labels = [row["variant"] for row in csv.DictReader(f)]
    assert "base (cosmos) [2 seeds]" in labels and "SiLC [1 seed]" in labels
    text = (report / "report.md").read_text()
    assert "Runs expected but not found: none" in text
    for section in ("## Paper claims", "## Feature suppression", "## Learning curves", "## Cross-attention maps"):
        assert section in text, section
    assert "not measurable" in text  # the debug grid lacks most Table 5 rows
    assert set(summary["claims"].values()) <= {"reproduced", "not reproduced", "not measurable"}
    for name in ("cumulative", "text_crop", "cross_attention", "data_size", "baselines", "suppression"):
        assert (report / f"{name}.tex").read_text().count(r"\toprule") == 1
    for png in ("data_size.png", "learning_curves.png", "cross_attention.png"):
        assert (report / png).stat().st_size > 1000, png
    curve = json.loads((repo / "runs" / "curves" / "base-s1.json").read_text())
    assert curve["step"] == [5.0, 10.0] and len(curve["teacher_t2i_R@1"]) == 2

    second = dvc(repo, "repro")
    assert "Running stage" not in second.stdout
    assert "Data and pipelines are up to date" in second.stdout

    subprocess.run(["git", "add", "-A"], cwd=repo, check=True, env=env())
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "debug run"],
                   cwd=repo, check=True, env=env())
    exp = dvc(repo, "exp", "run", "-S", "profile=debug", "-S", "distill.text_crop=false")
    assert "Running stage 'pretrain'" in exp.stdout
    assert "Running stage 'ablation_train@" not in exp.stdout, "no variant reads the base distill section"
    assert "Running stage 'ablation_seed_train@base-1'" in exp.stdout, "the base's replicate follows the base"
    diff = json.loads(dvc(repo, "params", "diff", "HEAD", "--json").stdout)["params.yaml"]
    # the base's own entry in the variant table (`${distill}`, for its replicates) follows it
    assert set(diff) == {"distill.text_crop", "ablation.variants.base.distill.text_crop"}
    assert diff["distill.text_crop"]["new"] is False
    after = _report_rows(report / "baselines.csv")
    for label in ("CLIP (alt text)", "SiLC"):
        assert after[label] == rows[label], label

    table = render_experiments(read_dvc_experiments(repo), repo / "reports" / "experiments.md")
    assert "distill.text_crop=False" in table.read_text()


def test_stage_reports_bad_config_in_one_line(tmp_path):
    repo = scratch_repo(tmp_path / "repo")
    (repo / "params.yaml").write_text(compose_params(["profile=debug", "data.generator.min_objects=0"]))
    proc = subprocess.run([sys.executable, "stages/download.py"], cwd=repo, env=env(), capture_output=True, text=True)
    assert proc.returncode == 1
    assert "stage download failed: ValueError: data.generator.min_objects=0" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (repo / "data" / "synthetic" / "raw").exists()
