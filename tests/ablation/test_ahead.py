"""Unit tier for the grid submitted ahead (cosmos.ablation.ahead, cosmos.ablation.parallel), without Slurm.

The record is trusted only for exactly the inputs it was made for: the same kwargs, the same files under the
stage's dvc.yaml deps. A stage collects a matching record once; a stale one is cancelled and replaced.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from cosmos.ablation import ahead, parallel
from cosmos.ablation.ahead import JobRecord, decide, deps_state, inputs_digest, read_record, write_record
from cosmos.config.compose import compose_params
from tests.conftest import REPO_ROOT

SLURM = ["profile=debug", "launcher=slurm", "launcher.cpus_per_task=1", "launcher.gpus_per_node=0",
         "train.device=cpu"]


@pytest.fixture(scope="module")
def params():
    return yaml.safe_load(compose_params(SLURM))


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """A repository root with a dvc.yaml whose ablation_train stage depends on code and the shards."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "ablation_train": {"deps": ["code", "${data.root}/shards"]},
        "ablation_seed_train": {"deps": ["code", "${data.root}/shards"]}}}))
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "train.py").write_text("x = 1\n")
    (tmp_path / "d" / "shards").mkdir(parents=True)
    (tmp_path / "d" / "shards" / "manifest.json").write_text("{}")
    return tmp_path


def _vparams(params):
    return {**{k: v for k, v in params.items() if k != "ablation"}, "data": {**params["data"], "root": "d"}}


def _digest(vparams, out="runs/ablation/clip"):
    from cosmos.training.pretrain import pretrain_job

    return ahead.stage_digest(pretrain_job(vparams, out, "d/shards"), "ablation_train", "d")


def test_training_stages_are_named_as_dvc_yaml_names_them(params):
    stages = ahead.training_stages(params)
    assert list(stages) == ["ablation_train@clip", "ablation_train@no_cross_attn", "ablation_train@silc",
                            "ablation_train@cosmos_data50", "ablation_seed_train@base-1"]
    assert stages["ablation_seed_train@base-1"] == ("base", 1) and stages["ablation_train@clip"] == ("clip", None)
    assert ahead.training_stage("clip", 1) == ("ablation_seed_train@clip-1", "ablation_seed_train")


def test_stage_deps_are_the_dvc_yaml_deps_with_the_data_root_resolved():
    deps = ahead.stage_deps("ablation_train", "data/x", REPO_ROOT / "dvc.yaml")
    assert Path("cosmos/ablation/ahead.py") in deps and Path("cosmos/training") in deps
    assert Path("data/x/shards") in deps and not any("${" in str(d) for d in deps)
    assert ahead.stage_deps("ablation_seed_train", "data/x", REPO_ROOT / "dvc.yaml") == deps
    with pytest.raises(ValueError, match="has no stage 'nope'"):
        ahead.stage_deps("nope", "d", REPO_ROOT / "dvc.yaml")


def test_deps_state_sees_edits_but_not_byte_code(tree):
    before = deps_state(["code", "d/shards", "missing"])
    assert ["missing", None, None] in before
    (tree / "code" / "__pycache__").mkdir()
    (tree / "code" / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"\0")
    assert deps_state(["code", "d/shards", "missing"]) == before, "the job's own byte-code is no change"
    (tree / "code" / "train.py").write_text("x = 2\n")
    os.utime(tree / "code" / "train.py", ns=(1, 1))
    assert deps_state(["code", "d/shards", "missing"]) != before


def test_the_digest_is_canonical_and_follows_every_input():
    kwargs = {"params": {"seed": 0, "optim": {"lr": 1e-3, "eps": 1e-8}}, "out_dir": "/a"}
    same = {"out_dir": "/a", "params": {"optim": {"eps": 1e-8, "lr": 1e-3}, "seed": 0}}
    deps = [["code/train.py", 6, 1]]
    assert inputs_digest(kwargs, deps) == inputs_digest(same, deps)
    assert inputs_digest(kwargs, deps) != inputs_digest({**kwargs, "out_dir": "/b"}, deps)
    assert inputs_digest(kwargs, deps) != inputs_digest({**kwargs, "params": {"seed": 1}}, deps)
    assert inputs_digest(kwargs, deps) != inputs_digest(kwargs, [["code/train.py", 6, 2]])


def test_decide_uses_only_a_matching_record_of_a_live_or_completed_job():
    rec = JobRecord(stage="ablation_train@clip", job_id="7", tasks=1, digest="abc")
    assert decide(None, "abc") == "none"
    assert decide(rec, "xyz") == "stale" and decide(rec, "xyz", "RUNNING") == "stale"
    assert decide(rec, "abc") == "use"  # the stage: a failed job is waited on and reported, once
    for state in ("PENDING", "RUNNING", "REQUEUED", "COMPLETED"):
        assert decide(rec, "abc", state) == "use", state
    for state in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "UNKNOWN"):
        assert decide(rec, "abc", state) == "dead", state


def test_records_round_trip_and_a_corrupt_one_is_ignored_loudly(tmp_path, capsys):
    rec = JobRecord(stage="ablation_train@clip", job_id="42", tasks=2, digest="d" * 64)
    assert read_record(tmp_path) is None
    write_record(tmp_path, rec)
    assert read_record(tmp_path) == rec
    (tmp_path / ahead.RECORD_NAME).write_text("{not json")
    assert read_record(tmp_path) is None
    assert "ignoring unreadable job record" in capsys.readouterr().out


class _Calls:
    def __init__(self):
        self.launched, self.cancelled, self.waited = [], [], []


@pytest.fixture
def fakes(monkeypatch):
    """Stand-ins for the cluster: launching, cancelling and waiting are recorded, not done."""
    import cosmos.training.launch as launch

    calls = _Calls()
    for module in (ahead, parallel):
        monkeypatch.setattr(module, "cancel_jobs", lambda ids: calls.cancelled.extend(ids))
    monkeypatch.setattr(ahead, "slurm_job", lambda log_dir, record: ("job", record.job_id, record.tasks))
    monkeypatch.setattr(launch, "wait", lambda job, log_dir: calls.waited.append(job) or {"finished": True, "steps": 10})
    calls.launch = lambda params, out, shards: calls.launched.append(str(out)) or {"finished": True, "steps": 10}
    return calls


def _collect(vparams, calls):
    return ahead.train_or_collect(vparams, "runs/ablation/clip", "d/shards", "ablation_train@clip", "ablation_train",
                                  launch=calls.launch)


def test_a_stage_collects_the_matching_record_once(tree, params, fakes):
    vparams = _vparams(params)
    log_dir = Path("runs/ablation/clip/submitit")
    write_record(log_dir, JobRecord("ablation_train@clip", "11", 1, _digest(vparams)))
    assert _collect(vparams, fakes) == {"finished": True, "steps": 10}
    assert fakes.waited == [("job", "11", 1)] and fakes.launched == [] and fakes.cancelled == []
    assert read_record(log_dir) is None, "a record is used once"
    _collect(vparams, fakes)  # no record left: the stage trains as usual
    assert fakes.launched == ["runs/ablation/clip"]


def test_a_stale_record_is_cancelled_and_the_stage_trains_anew(tree, params, fakes, capsys):
    vparams = _vparams(params)
    log_dir = Path("runs/ablation/clip/submitit")
    for change in ("params", "code"):
        write_record(log_dir, JobRecord("ablation_train@clip", "12", 1, _digest(vparams)))
        if change == "params":
            vparams = {**vparams, "optim": {**vparams["optim"], "lr": 0.5}}
        else:
            (tree / "code" / "train.py").write_text("x = 3  # edited after submission\n")
        _collect(vparams, fakes)
        assert read_record(log_dir) is None
    assert fakes.cancelled == ["12", "12"] and fakes.waited == [] and len(fakes.launched) == 2
    assert "job 12 was submitted ahead with other inputs" in capsys.readouterr().out


def test_a_failed_collected_job_fails_the_stage_and_drops_the_record(tree, params, fakes, monkeypatch):
    import cosmos.training.launch as launch

    vparams = _vparams(params)
    log_dir = Path("runs/ablation/clip/submitit")
    write_record(log_dir, JobRecord("ablation_train@clip", "13", 1, _digest(vparams)))

    def failing(job, log_dir):
        raise launch.LaunchError(f"training job {job[1]} failed: boom (logs: {log_dir}/13)")

    monkeypatch.setattr(launch, "wait", failing)
    with pytest.raises(launch.LaunchError, match="training job 13 failed: boom"):
        _collect(vparams, fakes)
    assert read_record(log_dir) is None and fakes.launched == []

    write_record(log_dir, JobRecord("ablation_train@clip", "14", 1, _digest(vparams)))
    monkeypatch.setattr(launch, "wait", lambda job, log_dir: {"finished": False, "steps": 3})
    with pytest.raises(RuntimeError, match="training stopped at step 3"):
        _collect(vparams, fakes)


def test_other_launchers_ignore_records(tree, params, fakes):
    vparams = {**_vparams(params), "launcher": {**params["launcher"], "name": "local"}}
    write_record(Path("runs/ablation/clip/submitit"), JobRecord("ablation_train@clip", "15", 1, "x"))
    _collect(vparams, fakes)
    assert fakes.launched == ["runs/ablation/clip"] and fakes.waited == [] and fakes.cancelled == []


def test_submit_grid_keeps_live_matching_jobs_and_replaces_the_rest(tree, params, fakes, monkeypatch):
    grid_params = {**params, "data": {**params["data"], "root": "d"},
                   "ablation": {**params["ablation"], "run": ["clip", "silc", "no_cross_attn"], "replicated": ["clip"]}}
    stages = ["ablation_train@clip", "ablation_train@silc", "ablation_train@no_cross_attn", "ablation_seed_train@clip-1"]
    vp = {s: parallel._run_params(grid_params, *ahead.training_stages(grid_params)[s])[1] for s in stages}
    write_record(Path("runs/ablation/clip/submitit"), JobRecord(stages[0], "21", 1, _digest(vp[stages[0]])))
    write_record(Path("runs/ablation/silc/submitit"), JobRecord(stages[1], "22", 1, _digest(vp[stages[1]], "runs/ablation/silc")))
    write_record(Path("runs/ablation/no_cross_attn/submitit"), JobRecord(stages[2], "23", 1, "stale"))
    states = {"21": "RUNNING", "22": "FAILED", "23": "RUNNING"}
    submitted = []

    def submit(vparams, out, shards, stage, kind):
        submitted.append((stage, kind, str(out)))
        return JobRecord(stage, str(100 + len(submitted)), 1, "new")

    records = parallel.submit_grid(grid_params, stages, state=states.__getitem__, submit=submit)
    assert [r.job_id for r in records] == ["21", "101", "102", "103"]
    assert submitted == [("ablation_train@silc", "ablation_train", "runs/ablation/silc"),
                         ("ablation_train@no_cross_attn", "ablation_train", "runs/ablation/no_cross_attn"),
                         ("ablation_seed_train@clip-1", "ablation_seed_train", "runs/ablation/clip-s1")]
    assert fakes.cancelled == ["22", "23"], "the failed and the stale job are cancelled before resubmission"


def test_a_failed_submission_cancels_what_the_grid_had_submitted(tree, params, fakes):
    grid_params = {**params, "data": {**params["data"], "root": "d"}}
    stages = ["ablation_train@clip", "ablation_train@silc"]

    def submit(vparams, out, shards, stage, kind):
        if stage.endswith("silc"):
            raise RuntimeError("sbatch refused the job")
        write_record(Path(out) / "submitit", JobRecord(stage, "31", 1, "d"))
        return JobRecord(stage, "31", 1, "d")

    with pytest.raises(RuntimeError, match="sbatch refused"):
        parallel.submit_grid(grid_params, stages, state=lambda j: "RUNNING", submit=submit)
    assert fakes.cancelled == ["31"] and read_record(Path("runs/ablation/clip/submitit")) is None


def test_plan_reproduces_the_changed_upstream_first_and_submits_only_changed_training_stages():
    grid = ["ablation_train@clip", "ablation_train@silc", "ablation_seed_train@clip-1"]
    changed = {"download": [], "shard": [], "ablation_train@clip": [], "ablation_seed_train@clip-1": [],
               "ablation_eval@clip": [], "pretrain": []}
    asked = []

    def status(targets, with_deps):
        asked.append((list(targets), with_deps))
        if not targets:
            return changed
        return {k: v for k, v in changed.items() if k in targets or k in ("download", "shard")}

    upstream, todo = parallel.plan(grid, [], status)
    assert upstream == ["download", "shard"] and todo == ["ablation_train@clip", "ablation_seed_train@clip-1"]
    assert asked[1] == (todo, True)
    assert parallel.plan(grid, [], lambda t, w: {"pretrain": []}) == ([], [])


def test_the_command_refuses_a_launcher_that_cannot_run_jobs_ahead(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(parallel.GridError, match="no dvc.yaml"):
        parallel.main([])
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params.yaml").write_text(compose_params(["profile=debug"]))
    with pytest.raises(parallel.GridError, match="launcher.name='local'.*launcher=slurm"):
        parallel.main([], status=lambda t, w: pytest.fail("nothing is asked of DVC"))
