"""``benchmarks/gpu_check.py`` in its CPU reduced mode, so that the GPU check cannot rot: every section that can run
on a CPU passes, the GPU-only ones are skipped with a stated reason, both reports are written and the exit status
says whether a check failed. Behaviour, not timings (``--threads 1``: the suite shares 2 cores)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, load_script

SCRIPT = REPO_ROOT / "benchmarks" / "gpu_check.py"
CPU_SECTIONS = ("placement", "precision", "learning", "throughput", "ddp", "checkpoint", "accumulation", "loader",
                "evaluation")
SKIPPED = {"gradscaler": "CUDA", "host_syncs": "test_no_host_sync.py", "side_by_side": "--reference-src"}  # section -> a word of its stated reason


@pytest.mark.timeout(300)
def test_reduced_cpu_run_passes_every_cpu_section_and_writes_both_reports(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--out", str(tmp_path), "--threads", "1",
                           "--time-budget-s", "240"], capture_output=True, text=True, cwd=REPO_ROOT, timeout=290)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    sections = report["sections"]
    assert list(sections) == ["placement", "precision", "learning", "gradscaler", "throughput", "ddp", "checkpoint",
                              "accumulation", "host_syncs", "loader", "evaluation", "side_by_side"]
    assert sections["host_syncs"]["reason"].startswith("needs CUDA")
    for name in CPU_SECTIONS:
        assert sections[name]["status"] == "pass", (name, sections[name])
        assert sections[name]["criterion"] and sections[name]["summary"], name
    for name, word in SKIPPED.items():
        assert sections[name]["status"] == "skipped" and word in sections[name]["reason"], (name, sections[name])
    assert report["ok"] is True and report["failed"] == []
    assert report["mode"]["profile"] == "reduced" and report["mode"]["device"] == "cpu"
    assert report["environment"]["torch"] and report["environment"]["git"]["commit"]

    # What each section measured, as the JSON states it.
    assert all(r["off_device"] == 0 and r["tensors"] > 100 for r in sections["placement"]["rows"])
    assert {r["precision"] for r in sections["precision"]["rows"]} == {"fp32", "bf16"}  # fp16 needs CUDA
    losses = sections["learning"]["numbers"]["losses"]
    assert len(losses) == 20 and losses[-1] < 0.8 * losses[0]
    rows = sections["throughput"]["rows"]
    assert [(r["grad_checkpointing"], r["batch"]) for r in rows] == [(False, 4), (False, 8), (True, 4), (True, 8)]
    assert all(r["status"] == "ok" and r["s_per_step"] > 0 and 0 < r["mfu"] for r in rows)
    assert all(r["counted_tflop"] > r["model_tflop"] for r in rows if r["grad_checkpointing"])  # the recompute
    assert "measured" in sections["throughput"]["numbers"]["peak_source"]
    assert [r["method"] for r in sections["ddp"]["rows"]] == ["clip", "silc", "cosmos"]
    assert all(r["backend"] == "gloo" and r["bit_identical"] for r in sections["ddp"]["rows"])
    assert sections["checkpoint"]["numbers"]["bit_identical"]
    assert sections["accumulation"]["numbers"]["accum_steps"] == 2
    loader = sections["loader"]["numbers"]
    assert loader["workers"] == 2 and loader["bad_samples"] == 0 and loader["loader_over_train"] > 0
    assert sections["evaluation"]["numbers"]["encode_images_per_s"] > 0

    markdown = (tmp_path / "gpu_check.md").read_text()
    assert "all checks passed" in markdown
    for name in sections:
        assert f"| {name} | {sections[name]['status']} |" in markdown
    assert "## throughput" in markdown


def _load_gpu_check():
    sys.path.insert(0, str(SCRIPT.parent))
    return load_script("benchmarks/gpu_check.py", "gpu_check")


@pytest.mark.timeout(180)
def test_a_failing_section_is_recorded_the_run_goes_on_and_the_exit_status_is_1(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts benchmarks/ on it
    gpu_check = _load_gpu_check()
    checks = gpu_check.checks

    def broken(ctx):
        raise RuntimeError("placement exploded")

    monkeypatch.setitem(checks.SECTIONS, "placement", broken)
    monkeypatch.setitem(checks.ESTIMATE_S, "accumulation", (10**6, 10**6))  # more than any budget
    rc = gpu_check.main(["--device", "cpu", "--out", str(tmp_path), "--sections", "placement", "precision",
                         "accumulation"])
    assert rc == 1
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    sections = report["sections"]
    assert list(sections) == ["placement", "precision", "accumulation"]
    assert sections["placement"]["status"] == "error"
    assert "RuntimeError: placement exploded" in sections["placement"]["reason"]
    assert "placement exploded" in sections["placement"]["traceback"]
    assert sections["precision"]["status"] == "pass"  # the run went on after the error
    assert sections["accumulation"]["status"] == "skipped"
    assert sections["accumulation"]["reason"].startswith("skipped (time budget)")
    assert report["ok"] is False and report["failed"] == ["placement"]
    assert "FAILED: placement" in (tmp_path / "gpu_check.md").read_text()


def _sbs_run(s_per_step, loss, oom=False):
    if oom:
        return {"oom": True, "error": "CUDA out of memory", "peak_rss_mib": 900.0}
    terms = {"clip_loss": loss - 1.0, "distill_loss": 1.0, "loss": loss}
    return {"s_per_step": s_per_step, "step_times": [s_per_step], "samples_per_s": 128 / s_per_step,
            "losses": [terms, terms], "peak_rss_mib": 900.0, "peak_cuda_mib": 40960.0, "gpu": "NVIDIA H100 80GB HBM3",
            "tf32": {"cuda_matmul_allow_tf32": False}}


def test_side_by_side_section_on_a_gpu_runs_vit_b_16_at_batch_128_bf16_fp16_and_records_an_oom(tmp_path, monkeypatch):
    """Full mode: the command side_by_side.py gets, and the rows read back from its JSON (a stand-in here: no
    GPU), through side_by_side.summarize's CUDA path: a ratio per precision, an OOM recorded, not failed."""
    import time

    import torch

    monkeypatch.setattr(sys, "path", list(sys.path))
    checks = _load_gpu_check().checks
    sbs = checks.side_by_side
    runs = {"bf16": {"project": [_sbs_run(0.5, 6.0)], "reference": [_sbs_run(1.0, 6.01)]},
            "fp16": {"project": [_sbs_run(0, 0, oom=True)], "reference": [_sbs_run(1.2, 6.0)]}}
    seen, real_popen = [], subprocess.Popen

    def fake_popen(cmd, **kwargs):
        seen.append(cmd)
        text, summary = sbs.summarize(runs, "cuda")
        assert "GPU MiB" in text and "| fp16 | OOM | 1.200 |" in text
        out = Path(cmd[cmd.index("--json") + 1])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"summary": summary, "runs": runs,
                                   "config": {"gpu": "NVIDIA H100 80GB HBM3", "tf32": {}}}))
        return real_popen([sys.executable, "-c", "pass"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    monkeypatch.setattr(checks.subprocess, "Popen", fake_popen)
    ctx = checks.Ctx(device=torch.device("cuda"), prof=checks.FULL, work=tmp_path, check_shards=tmp_path, data=None,
                     deadline=time.perf_counter() + 600, reference_src=tmp_path)
    result = checks.side_by_side_ratio(ctx)
    cmd = " ".join(seen[0])
    assert "--device cuda --model vit-b-16" in cmd and "--batch 128" in cmd and "--precision bf16 fp16" in cmd
    assert result["passed"] is True
    bf16, fp16 = result["rows"]
    assert bf16["status"] == "ok" and bf16["ratio"] == 2.0 and abs(bf16["loss_diff_step0"] - 0.01) < 1e-9
    assert bf16["project_peak_gib"] == 40.0
    assert fp16["status"] == "OOM: project" and fp16["ratio"] is None
    assert result["summary"].startswith("bf16 2.00x (step-0 loss diff 1.0e-02); fp16 OOM: project (NVIDIA H100")


def test_side_by_side_refuses_fp16_on_cpu_and_unknown_models():
    sbs = load_script("benchmarks/side_by_side.py", "side_by_side")
    with pytest.raises(SystemExit, match="--precision fp16 needs --device cuda"):
        sbs.main(["--precision", "bf16", "fp16"])
    with pytest.raises(SystemExit):
        sbs.parse_args(["--model", "vit-l-14"])
    args = sbs.parse_args([])
    assert (args.device, args.model, args.precision) == ("cpu", "narrow", ["fp32", "bf16"])
    vit = sbs.model_config("vit-b-16")
    assert vit["embed_dim"] == 512 and vit["vision_cfg"]["width"] == 768 and vit["vision_cfg"]["layers"] == 12
    assert vit["text_cfg"] == {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}
    assert sbs.model_config("narrow") == sbs.MODEL_CONFIG
