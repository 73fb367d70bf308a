"""Evaluation stages as Slurm jobs on the local cluster (``launcher=slurm``; the ``slurm`` fixture brings it up).

- ``eval_compositional``'s stage function submits one one-task job named ``cosmos-eval-compositional``, which
  accounting records as COMPLETED; its logs sit in ``runs/eval/submitit/compositional/<job id>/``, outside the
  DVC out, and the metrics JSON and per-item scores are byte-identical to the in-process stage's;
- ``ablation_eval@clip`` runs its four evaluations in one job, with the same byte-identical outputs.

Both sides run one torch thread (the job gets ``--cpus-per-task=1``), so they run the same CPU kernels.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
import yaml

from cosmos.config.compose import compose_params
from cosmos.models import build_model, export_reference_checkpoint
from tests.conftest import load_script
from tests.eval.test_eval_launch import _one_thread

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(900)]

_SLURM = ["profile=debug", "launcher=slurm", "launcher.cpus_per_task=1", "launcher.gpus_per_node=0",
          "launcher.timeout_min=10", "eval.weights=teacher"]




def _checkpoint(path: Path) -> None:
    """A cosmos-tiny checkpoint in the reference layout (random weights: only equality matters here)."""
    torch.manual_seed(0)
    student, teacher = build_model("cosmos-tiny").state_dict(), build_model("cosmos-tiny").state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    export_reference_checkpoint(path, {f"module.{k}": v for k, v in student.items()}, teacher, epoch=1,
                                name="slurm-eval", optimizer_state={"state": {}, "param_groups": []})


def _params(tiny_raw: Path, *overrides: str) -> dict:
    return yaml.safe_load(compose_params([*_SLURM, f"data.root={tiny_raw.parent}", *overrides]))


def _in_process(params: dict) -> dict:
    return {**params, "launcher": {**params["launcher"], "name": "local"}}


def test_an_eval_stage_runs_as_a_slurm_job_with_the_in_process_metrics(slurm, job_env, tiny_raw, tmp_path,
                                                                        monkeypatch, capsys):
    from cosmos.eval.runner import run_compositional, stage_main

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    params = _params(tiny_raw)
    outputs = {}
    for where in ("here", "job"):
        folder = tmp_path / where
        _checkpoint(folder / "runs/pretrain/checkpoints/final.pt")  # eval.source.path is relative: the job's cwd
        monkeypatch.chdir(folder)
        with _one_thread() if where == "here" else contextlib.nullcontext():
            stage_main(_in_process(params) if where == "here" else params, "compositional", run_compositional)
        outputs[where] = [(folder / f).read_bytes() for f in ("reports/metrics/eval_compositional.json",
                                                               "runs/items/base/compositional.npz")]
    job_id = slurm.submitted_job_id(capsys.readouterr().out)
    info = slurm.job(job_id, timeout_s=120)
    assert (info["State"], info["JobName"], info["AllocCPUS"]) == ("COMPLETED", "cosmos-eval-compositional", "1")
    assert info["WorkDir"] == str(tmp_path / "job")
    assert outputs["job"] == outputs["here"]
    logs = tmp_path / "job/runs/eval/submitit/compositional" / str(job_id)
    assert list(logs.glob(f"{job_id}_0_log.out")), f"no job log in {logs}"
    assert sorted(p.name for p in (tmp_path / "job/runs/eval/compositional").iterdir()) == ["run_info.json"]


def _ablation_stage():
    return load_script("stages/ablation_eval.py", "ablation_eval_stage")


def test_an_ablation_eval_stage_runs_its_four_evaluations_in_one_slurm_job(slurm, job_env, tiny_raw, tmp_path,
                                                                            monkeypatch, capsys):
    stage = _ablation_stage()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    params = _params(tiny_raw, "eval.segmentation.templates=" + str(tmp_path / "templates.json"))
    (tmp_path / "templates.json").write_text('["a photo of a {}."]')  # 1 template, not 80: a shorter job
    outputs = {}
    for where in ("here", "job"):
        folder = tmp_path / where
        _checkpoint(folder / "runs/ablation/clip/checkpoints/final.pt")
        monkeypatch.chdir(folder)
        with _one_thread() if where == "here" else contextlib.nullcontext():
            stage.main(_in_process(params) if where == "here" else params, "clip", None, "ablation_eval@clip")
        outputs[where] = {f: (folder / f).read_bytes() for f in (
            "reports/metrics/ablation/clip.json",
            *(f"runs/items/clip/{task}.npz" for task in ("retrieval", "classification", "segmentation",
                                                          "compositional")))}
    job_id = slurm.submitted_job_id(capsys.readouterr().out)
    info = slurm.job(job_id, timeout_s=120)
    assert (info["State"], info["JobName"]) == ("COMPLETED", "cosmos-eval-clip")
    assert [f for f in outputs["here"] if outputs["job"][f] != outputs["here"][f]] == []
    assert list((tmp_path / "job/runs/ablation/clip/eval-submitit" / str(job_id)).glob(f"{job_id}_0_log.err"))
