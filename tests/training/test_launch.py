"""Launchers: in-process, and a blocking submitit LocalExecutor job whose failure fails the caller."""

from __future__ import annotations

import json

import pytest

from cosmos.training.config import LauncherConfig
from cosmos.training.launch import LaunchError, launch


# The job unpickles its function in a fresh interpreter, so it must live in an importable module.
def _launcher(name: str) -> LauncherConfig:
    return LauncherConfig(name=name, timeout_min=2, nodes=1, tasks_per_node=1, cpus_per_task=1, gpus_per_node=0,
                          partition="", account="", qos="", constraint="", sbatch_extra={})


def test_local_launcher_runs_in_process(tmp_path):
    assert launch(dict, {"x": 3}, _launcher("local"), tmp_path) == {"x": 3}
    assert not any(tmp_path.iterdir())


def test_submitit_local_blocks_on_the_job_and_reports_its_failure(tmp_path):
    assert launch(dict, {"x": 4}, _launcher("submitit_local"), tmp_path / "ok") == {"x": 4}
    with pytest.raises(LaunchError, match=r"training job \S+ failed: .*JSONDecodeError"):
        launch(json.loads, {"s": "{bad"}, _launcher("submitit_local"), tmp_path / "fail")


def test_slurm_parameters_come_from_the_launcher_section():
    from cosmos.training.launch import executor_parameters

    cfg = _launcher("slurm")
    cfg = type(cfg)(**{**cfg.__dict__, "partition": "gpu", "account": "proj1", "qos": "high", "constraint": "a100",
                       "gpus_per_node": 4, "tasks_per_node": 4, "sbatch_extra": {"mem": "64G"}})
    params = executor_parameters(cfg, "slurm")
    assert params["slurm_partition"] == "gpu" and params["slurm_account"] == "proj1"
    assert params["slurm_qos"] == "high" and params["slurm_constraint"] == "a100"
    assert params["slurm_additional_parameters"] == {"mem": "64G"}
    assert params["gpus_per_node"] == 4 and params["tasks_per_node"] == 4
    local = executor_parameters(cfg, "local")
    assert not any(k.startswith("slurm_") for k in local) and "gpus_per_node" not in local
