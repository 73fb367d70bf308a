"""Launch parameters -> torch.distributed world, without a cluster (fake Slurm environments, fake ``sinfo``).

- every task of a 2-node x 4-task Slurm job gets its rank, local rank, world size and the same
  ``MASTER_ADDR``/``MASTER_PORT``, and ``init_distributed`` joins that world;
- a task trains on ``cuda:LOCAL_RANK`` when it sees its node's GPUs, on ``cuda:0`` when bound to one GPU;
- ``MASTER_PORT`` comes from the job id, never from the submitting shell;
- GPU requests: the sbatch parameters, the pre-submission ``sinfo`` check and the in-job CUDA check each
  fail with a message naming the cause and the fix.
"""

from __future__ import annotations

import pytest
import torch

from cosmos.training import distributed
from cosmos.training.config import LauncherConfig
from cosmos.training.distributed import World, check_gpus, export_job_world, init_distributed
from cosmos.training.launch import LaunchError, check_slurm_gpus, executor_parameters

_TORCH_VARS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


def _launcher(**overrides) -> LauncherConfig:
    base = dict(name="slurm", timeout_min=60, nodes=2, tasks_per_node=4, cpus_per_task=8, gpus_per_node=4,
                partition="gpu", account="proj", qos="normal", constraint="a100", sbatch_extra={})
    return LauncherConfig(**{**base, **overrides})


def _slurm_task_env(monkeypatch, procid: int, nodes: int = 2, per_node: int = 4) -> None:
    """What srun sets in task ``procid`` of a ``--nodes=2 --ntasks-per-node=4`` job on gpu[07-08]."""
    for key in _TORCH_VARS:  # recorded by monkeypatch, so what export_job_world sets is undone after the test
        monkeypatch.setenv(key, "unset")
        monkeypatch.delenv(key)
    monkeypatch.setenv("RANK", "99")  # stale, inherited from the submitting shell: must be overwritten
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    for key, value in {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": nodes * per_node, "SLURM_JOB_NUM_NODES": nodes,
                       "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_NODEID": procid // per_node,
                       "SLURM_PROCID": procid, "SLURM_LOCALID": procid % per_node}.items():
        monkeypatch.setenv(key, str(value))


def test_each_task_of_a_two_node_job_gets_its_place_in_one_world(monkeypatch):
    import os

    seen = []
    for procid in range(8):
        _slurm_task_env(monkeypatch, procid)
        world = export_job_world()
        assert world == World(rank=procid, world_size=8, local_rank=procid % 4)
        env = {k: os.environ[k] for k in _TORCH_VARS}
        assert env["RANK"] == str(procid) and env["WORLD_SIZE"] == "8" and env["LOCAL_WORLD_SIZE"] == "4"
        assert env["MASTER_ADDR"] == "gpu07"  # the first node of the job hosts rank 0
        assert 20000 <= int(env["MASTER_PORT"]) <= 60000
        seen.append((env["MASTER_ADDR"], env["MASTER_PORT"]))
    assert len(set(seen)) == 1  # every task rendezvous at the same address


def test_a_master_port_inherited_from_the_shell_is_ignored(monkeypatch):
    import os

    _slurm_task_env(monkeypatch, 5)
    export_job_world()
    drawn = os.environ["MASTER_PORT"]
    monkeypatch.setenv("MASTER_PORT", "29511")  # exported by the submitting shell, so shared by every queued job
    export_job_world()
    assert os.environ["MASTER_PORT"] == drawn != "29511"
    monkeypatch.setenv("SLURM_JOB_ID", "4243")  # another job of the grid: another port
    export_job_world()
    assert os.environ["MASTER_PORT"] != drawn


def test_init_distributed_joins_the_exported_world(monkeypatch):
    _slurm_task_env(monkeypatch, 6)
    export_job_world()
    calls = []
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend, init_method: calls.append(
        (backend, init_method)))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: calls.append(("set_device", index)))
    assert init_distributed(torch.device("cpu")) == World(rank=6, world_size=8, local_rank=2)
    assert init_distributed(torch.device("cuda")).local_rank == 2
    # NCCL: the task's own GPU is made current before the process group forms
    assert calls == [("gloo", "env://"), ("set_device", 2), ("nccl", "env://")]


@pytest.mark.parametrize("count, local_rank, index", [(4, 0, 0), (4, 3, 3), (8, 3, 3), (1, 0, 0), (1, 3, 0)])
def test_each_task_trains_on_its_gpu_whether_it_sees_the_node_s_gpus_or_only_its_own(monkeypatch, count, local_rank,
                                                                                   index):
    from cosmos.training.pretrain import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    assert distributed.cuda_index(local_rank) == index
    assert pick_device("auto", World(rank=4 + local_rank, world_size=8, local_rank=local_rank)) == torch.device(
        "cuda", index)
    check_gpus(4, local_rank)  # a task bound to one GPU (count 1) is fine at any local rank


@pytest.mark.parametrize("count, local_rank", [(2, 3), (4, 4)])
def test_a_task_that_sees_some_but_not_its_gpu_fails_naming_what_it_sees(monkeypatch, count, local_rank):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", ",".join(map(str, range(count))))
    seen = rf"task with local rank {local_rank} sees {count} CUDA device\(s\) \(CUDA_VISIBLE_DEVICES=0,1"
    with pytest.raises(RuntimeError, match=seen + r".*launcher.tasks_per_node = launcher.gpus_per_node"):
        distributed.cuda_index(local_rank)
    with pytest.raises(RuntimeError, match=rf"launcher.gpus_per_node=4 on \S+: {seen}"):
        check_gpus(4, local_rank)


def test_sbatch_parameters_carry_nodes_tasks_and_gpus():
    params = executor_parameters(_launcher(), "slurm")
    assert (params["nodes"], params["tasks_per_node"], params["gpus_per_node"], params["cpus_per_task"]) == (2, 4, 4, 8)
    assert params["slurm_srun_args"] == ["--kill-on-bad-exit=1"]  # one failed rank ends the job
    assert "gpus_per_node" not in executor_parameters(_launcher(gpus_per_node=0), "slurm")  # no GRES request


@pytest.mark.parametrize("gres, gpus, ok", [
    ("gpu:a100:4(S:0-1)", 4, True), ("gpu:4,shard:8", 4, True), ("gpu:a100:4(S:0-1)", 8, False), ("(null)", 1, False),
])
def test_gpus_are_checked_against_the_partition_before_submission(gres, gpus, ok):
    sinfo = lambda cmd: f"g01|{gres}|gpu\ng02|{gres}|gpu\ncpu1|(null)|cpu*\n"  # noqa: E731
    launcher = _launcher(gpus_per_node=gpus, tasks_per_node=gpus)
    if ok:
        check_slurm_gpus(launcher, sinfo)
        return
    with pytest.raises(LaunchError, match=rf"launcher.gpus_per_node={gpus} but no node of partition 'gpu' has "
                                          rf"{gpus} GPU\(s\) .*set launcher.gpus_per_node=0 to train on CPUs"):
        check_slurm_gpus(launcher, sinfo)


def test_gpus_on_the_default_partition_and_one_task_per_gpu():
    sinfo = lambda cmd: "g01|gpu:4|gpu\ncpu1|(null)|cpu*\n"  # noqa: E731
    with pytest.raises(LaunchError, match="no node of the default partition 'cpu'"):
        check_slurm_gpus(_launcher(partition=""), sinfo)
    with pytest.raises(LaunchError, match="tasks_per_node=2 must equal launcher.gpus_per_node=4"):
        check_slurm_gpus(_launcher(tasks_per_node=2), sinfo)
    check_slurm_gpus(_launcher(gpus_per_node=0, tasks_per_node=2), sinfo)  # no GPUs asked: nothing to check


def test_a_job_that_asked_for_gpus_fails_at_start_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(RuntimeError, match=r"launcher.gpus_per_node=2 but task 1 on \S+ sees 0 CUDA device\(s\) "
                                           r"\(CUDA_VISIBLE_DEVICES=0,1.*set launcher.gpus_per_node=0"):
        check_gpus(2, local_rank=1)
    check_gpus(0)
