"""Evaluation through the launcher (``cosmos.eval.launch``), without a cluster.

- the eval job's settings: ``launcher`` with ``eval.launcher`` over it, always one node and one task, one GPU
  at most; ``local`` stays in-process;
- device settings that contradict the job's GPU request are refused before anything is queued;
- a ``submitit_local`` eval stage writes exactly what the in-process stage writes, keeps its job logs outside
  the DVC outs, and a failing job fails the stage naming the job and writes nothing.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch

from cosmos.eval import runner
from cosmos.eval.launch import EvalLaunchError, _check_device_request, eval_launcher

SLURM = dict(name="slurm", timeout_min=1440, nodes=1, tasks_per_node=4, cpus_per_task=8, gpus_per_node=4,
             partition="gpu", account="proj", qos="", constraint="", sbatch_extra={"mem": "64G"})
LOCAL = {**SLURM, "name": "local", "tasks_per_node": 1, "gpus_per_node": 0, "cpus_per_task": 1, "sbatch_extra": {}}


def test_local_evaluates_in_process():
    assert eval_launcher(LOCAL, None, "cosmos-eval-x") is None
    assert eval_launcher(None, None, "cosmos-eval-x") is None  # params without a launcher section
    assert eval_launcher(SLURM, {"name": "local"}, "cosmos-eval-x") is None  # opt out of jobs for evaluation


def test_the_eval_job_is_one_task_with_one_gpu_of_the_training_launcher():
    cfg = eval_launcher({**SLURM, "nodes": 2}, {"timeout_min": None, "partition": None}, "cosmos-eval-retrieval")
    assert (cfg.name, cfg.nodes, cfg.tasks_per_node, cfg.gpus_per_node) == ("slurm", 1, 1, 1)
    assert (cfg.timeout_min, cfg.partition, cfg.account, cfg.cpus_per_task) == (1440, "gpu", "proj", 8)
    assert cfg.sbatch_extra == {"mem": "64G", "job_name": "cosmos-eval-retrieval"}
    cpu = eval_launcher({**SLURM, "gpus_per_node": 0, "tasks_per_node": 2}, None, "cosmos-eval-x")
    assert (cpu.tasks_per_node, cpu.gpus_per_node) == (1, 0)


def test_eval_launcher_overrides_apply_to_evaluation_only():
    cfg = eval_launcher(SLURM, {"timeout_min": 30, "partition": "short", "gpus_per_node": 0,
                                "sbatch_extra": {"job-name": "mine"}}, "cosmos-eval-x")
    assert (cfg.timeout_min, cfg.partition, cfg.gpus_per_node) == (30, "short", 0)
    assert cfg.sbatch_extra == {"job-name": "mine"}  # the user's job name wins
    assert SLURM["timeout_min"] == 1440 and SLURM["sbatch_extra"] == {"mem": "64G"}
    local_job = eval_launcher(LOCAL, {"name": "submitit_local"}, "cosmos-eval-x")
    assert local_job.name == "submitit_local"


@pytest.mark.parametrize(("overrides", "message"), [
    ({"nodes": 2}, r"eval.launcher.nodes=2: evaluation runs in one task on one node"),
    ({"tasks_per_node": 4}, r"eval.launcher.tasks_per_node=4: evaluation runs in one task"),
    ({"gpus_per_node": 2}, r"eval.launcher.gpus_per_node=2: evaluation uses at most one GPU"),
    ({"timeout": 5}, r"eval.launcher: unknown key\(s\) \['timeout'\]"),
    ({"timeout_min": "soon"}, r"eval.launcher.timeout_min='soon'"),
])
def test_bad_eval_launcher_settings_name_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        eval_launcher(SLURM, overrides, "cosmos-eval-x")


def test_device_settings_that_contradict_the_gpu_request_fail_before_queueing():
    no_gpu = eval_launcher(SLURM, {"gpus_per_node": 0}, "x")
    with pytest.raises(ValueError, match=r"eval.device=cuda but the evaluation job asks for no GPU.*Fix"):
        _check_device_request("cuda", no_gpu)
    with pytest.raises(ValueError, match=r"eval.device=cpu but the evaluation job would hold a GPU.*Fix"):
        _check_device_request("cpu", eval_launcher(SLURM, None, "x"))
    with pytest.raises(ValueError, match=r"eval.device='gpu' must be one of"):
        _check_device_request("gpu", no_gpu)
    _check_device_request("auto", no_gpu)
    _check_device_request("cuda", eval_launcher(SLURM, None, "x"))
    _check_device_request("cuda", eval_launcher(LOCAL, {"name": "submitit_local"}, "x"))  # this machine decides


@contextlib.contextmanager
def _one_thread():
    """One torch thread here, as in the job (OMP_NUM_THREADS=1), so both sides run the same kernels."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _stage(params: dict, folder: Path, monkeypatch) -> tuple[bytes, bytes]:
    monkeypatch.chdir(folder)
    runner.stage_main(params, "compositional", runner.run_compositional)
    return ((folder / "reports/metrics/eval_compositional.json").read_bytes(),
            (folder / "runs/items/base/compositional.npz").read_bytes())


def test_a_submitit_local_eval_stage_writes_what_the_in_process_stage_writes(eval_cfg, tmp_path, monkeypatch,
                                                                              capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    params = {"eval": {**eval_cfg, "weights": "teacher"}, "model": {"name": "cosmos-tiny"}, "seed": 0,
              "launcher": {**LOCAL, "timeout_min": 10}}
    (tmp_path / "here").mkdir()
    (tmp_path / "job").mkdir()
    with _one_thread():
        expected = _stage(params, tmp_path / "here", monkeypatch)
    assert "submitted" not in capsys.readouterr().out
    job = _stage({**params, "launcher": {**params["launcher"], "name": "submitit_local"}}, tmp_path / "job",
                 monkeypatch)
    assert job == expected
    out = capsys.readouterr().out
    assert "submitted local job" in out, out
    logs = tmp_path / "job/runs/eval/submitit/compositional"
    job_dirs = [p for p in logs.iterdir() if p.name.isdigit()]  # <job id>/ (submitit also leaves a "%j")
    assert len(job_dirs) == 1 and list(job_dirs[0].glob("*_log.out")), f"no job log under {logs}"
    outs = tmp_path / "job/runs/eval/compositional"
    assert sorted(p.name for p in outs.iterdir()) == ["run_info.json"]  # no job files inside the DVC out
    assert json.loads((outs / "run_info.json").read_text())["stage"] == "eval_compositional"


def test_a_failing_eval_job_fails_the_stage_and_writes_nothing(eval_cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = {**eval_cfg, "source": {"kind": "checkpoint", "path": str(tmp_path / "no-such-run")}}
    params = {"eval": cfg, "model": {"name": "cosmos-tiny"}, "seed": 0,
              "launcher": {**LOCAL, "name": "submitit_local", "timeout_min": 10}}
    with pytest.raises(EvalLaunchError, match=r"eval_compositional: evaluation job \S+ failed: FileNotFoundError: "
                                              r".*no-such-run does not exist"):
        runner.stage_main(params, "compositional", runner.run_compositional)
    assert not (tmp_path / "reports").exists() and not (tmp_path / "runs/items").exists()
    assert [p.name for p in (tmp_path / "runs/eval").iterdir()] == ["submitit"]  # no out, no temporary folder
