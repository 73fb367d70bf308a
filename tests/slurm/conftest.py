"""The `slurm` fixture: a real single-node Slurm with accounting, brought up once per session.

It runs ``scripts/slurm_up.sh`` (as root: installs the Debian packages when missing, starts munge, MariaDB,
slurmdbd, slurmctld and slurmd; a no-op when they already run). Tests that use it skip, with the script's
stated reason, only where the machine cannot host Slurm (exit 3: not root, not Linux, no apt-get); any
other failure of the script fails them with its output.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from tests.conftest import REPO_ROOT

SLURM_UP = REPO_ROOT / "scripts" / "slurm_up.sh"


@dataclass(frozen=True)
class Slurm:
    """The running cluster: its node name (``hostname -s``) and default partition."""

    node: str
    partition: str

    def job_ids(self) -> set[int]:
        """Every job id that accounting knows of (to tell the jobs a test submitted from earlier ones)."""
        out = _run(["sacct", "--noheader", "--allocations", "--parsable2", "--starttime=2000-01-01",
                    "--format=JobIDRaw"])
        return {int(line) for line in out.split() if line.isdigit()}

    def job(self, job_id: int | str, timeout_s: float = 60) -> dict[str, str]:
        """``sacct`` fields of one job's allocation (State, AllocCPUS, WorkDir, ...), once its latest run ended.

        submitit's result files appear as the tasks return, a moment before Slurm marks the job done; and
        for a moment after it ended, accounting may still name the allocation ``allocation`` rather than the
        job's name, so both settle before the record is returned.
        """
        deadline = time.monotonic() + timeout_s
        unsettled = ("PENDING", "RUNNING", "COMPLETING", "REQUEUED")
        while (last := self.job_runs(job_id)[-1])["State"] in unsettled or last["JobName"] == "allocation":
            assert time.monotonic() < deadline, f"job {job_id} still {last['State']} ({last['JobName']}) after {timeout_s} s"
            time.sleep(0.5)
        return last

    def job_runs(self, job_id: int | str) -> list[dict[str, str]]:
        """One ``sacct`` record per run of the job, oldest first (a requeued job has a ``REQUEUED`` run)."""
        fields = "JobIDRaw,JobName,State,ExitCode,NNodes,AllocCPUS,WorkDir"
        out = _run(["sacct", "--noheader", "--allocations", "--duplicates", "--parsable2", f"--jobs={job_id}",
                    f"--format={fields}"])
        rows = [dict(zip(fields.split(","), line.split("|"))) for line in out.splitlines() if line.strip()]
        assert rows, f"sacct knows no job {job_id}"
        return rows

    def squeue_state(self, job_id: int | str) -> str:
        """The job's state in the queue (``PENDING``, ``RUNNING``, ...), ``""`` once it left the queue."""
        return _run(["squeue", "--noheader", f"--jobs={job_id}", "--format=%T"], check=False).strip()

    @staticmethod
    def launcher(**overrides):
        """A ``launcher=slurm`` section for the test cluster: 2 tasks of 1 CPU, no GPU, 10 minutes."""
        from cosmos.training.config import LauncherConfig

        base = dict(name="slurm", timeout_min=10, nodes=1, tasks_per_node=2, cpus_per_task=1, gpus_per_node=0,
                    partition="", account="", qos="", constraint="", sbatch_extra={})
        return LauncherConfig(**{**base, **overrides})

    @staticmethod
    def submitted_job_id(out: str) -> int:
        """The job id from the ``submitted slurm job <id>; ...`` line that the launcher prints."""
        for line in out.splitlines():
            if line.startswith("submitted slurm job "):
                return int(line.split()[3].rstrip(";"))
        raise AssertionError(f"no 'submitted slurm job' line in:\n{out}")

    def wait_for_state(self, job_id: int | str, states: set[str], timeout_s: float = 120) -> str:
        deadline = time.monotonic() + timeout_s
        while (state := self.squeue_state(job_id)) not in states:
            assert time.monotonic() < deadline, f"job {job_id} is {state or 'gone'}, not {states}, after {timeout_s} s"
            time.sleep(0.5)
        return state


def _run(cmd: list[str], check: bool = True) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=60).stdout


@pytest.fixture(scope="session")
def slurm() -> Slurm:
    """Bring the local cluster up (idempotent); skip only where this machine cannot host Slurm."""
    if not sys.platform.startswith("linux") or shutil.which("bash") is None:
        pytest.skip("Slurm tests need Linux with bash (scripts/slurm_up.sh)")
    proc = subprocess.run(["bash", str(SLURM_UP)], capture_output=True, text=True, timeout=1200)
    if proc.returncode == 3:
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    if proc.returncode != 0:
        pytest.fail(f"scripts/slurm_up.sh exited {proc.returncode}:\n{proc.stdout}{proc.stderr}", pytrace=False)
    node = subprocess.run(["hostname", "-s"], capture_output=True, text=True, check=True).stdout.strip()
    return Slurm(node=node, partition="debug")


@pytest.fixture
def job_env(monkeypatch) -> None:
    """Jobs inherit the submitting environment (``sbatch --export=ALL``): let them import ``tests.*``."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))



@pytest.fixture(autouse=True)
def _cancel_leftover_jobs(request):
    """After each `slurm` test, cancel the jobs it submitted that are still queued (a failed test must not
    leave a job holding the node's CPUs for the next one)."""
    if request.node.get_closest_marker("slurm") is None:
        yield
        return
    request.getfixturevalue("slurm")  # up before the first look at the queue
    before = set(_queued())
    yield
    leftover = sorted(set(_queued()) - before)
    if leftover:
        subprocess.run(["scancel", *leftover], check=False)


def _queued() -> list[str]:
    return _run(["squeue", "--noheader", "--format=%i"], check=False).split()
