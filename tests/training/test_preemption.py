"""The requeue signal, single process: recorded, not acted on mid-step; the step in progress is checkpointed at
its end, and the run resumed from there ends on the uninterrupted run's exact tensors. Workers ignore it.

The real path (submitit's handler, Slurm's requeue, 2 ranks, 2 workers each) is
tests/slurm/test_slurm_jobs.py::test_a_preempted_job_checkpoints_the_step_in_progress_and_resumes_there.
"""

from __future__ import annotations

import os
import signal

import pytest
import torch

from cosmos.training.checkpoint import CheckpointDir
from cosmos.training.preemption import STOP, StopRequest, ignore_job_signals
from tests.training.test_loop import _state, _trainer


@pytest.fixture
def stop():
    request = StopRequest()
    yield request
    request.reset()


def test_the_signal_is_recorded_and_asked_for_at_the_boundary(stop):
    called = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: called.append(signum))
    try:
        assert not stop.requested()  # not installed: never a stop, no collective
        stop.install(signal.SIGUSR2)
        assert not stop.requested()
        os.kill(os.getpid(), signal.SIGUSR2)
        assert stop.requested() and stop.signum == signal.SIGUSR2
        assert called == []  # the previous (submitit's) handler waits for the hand-over
        with pytest.raises(SystemExit, match="the requeue handler returned"):  # submitit's would have exited
            stop.hand_over(rank=0)
        assert called == [signal.SIGUSR2]  # handed over once, at the boundary
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_a_stop_checkpoints_the_step_in_progress_and_resumes_there_exactly(tiny_shards, tmp_path):
    full = _trainer(tmp_path / "full", tiny_shards, checkpoint_every=1000)
    full.fit()

    # Signalled during step 5 (mid-epoch 2); the only periodic checkpoint is the epoch end at step 3.
    stopped = _trainer(tmp_path / "stopped", tiny_shards, checkpoint_every=1000)
    stopped.should_stop = lambda: stopped.position.step >= 5
    position = stopped.fit()
    assert stopped.stopped and position.step == 5
    assert [p.name for p in CheckpointDir(tmp_path / "stopped").paths()] == ["step-00000003.pt", "step-00000005.pt"]

    resumed = _trainer(tmp_path / "stopped", tiny_shards, checkpoint_every=1000)
    assert resumed.position.step == 5 and not resumed.stopped
    resumed.fit()
    want, got = _state(full), _state(resumed)
    assert [k for k in want if not torch.equal(want[k], got[k])] == []


def test_a_stop_asked_at_the_last_step_lets_the_run_finish(tiny_shards, tmp_path):
    trainer = _trainer(tmp_path, tiny_shards, checkpoint_every=1000)
    trainer.should_stop = lambda: trainer.position.step >= trainer.total_steps
    position = trainer.fit()
    assert position.step == trainer.total_steps and not trainer.stopped


def test_workers_ignore_the_job_signals(tiny_shards, tmp_path):
    trainer = _trainer(tmp_path, tiny_shards, num_workers=2)
    assert trainer.loader.epoch(0).worker_init_fn is ignore_job_signals
    assert _trainer(tmp_path / "w0", tiny_shards).loader.epoch(0).worker_init_fn is None
    pid = os.fork()
    if pid == 0:  # a worker's view: the signals are ignored, so a preemption signal to it does nothing
        code = 1
        try:
            ignore_job_signals(0)
            os.kill(os.getpid(), signal.SIGUSR2)
            os.kill(os.getpid(), signal.SIGTERM)
            code = 0 if all(signal.getsignal(s) is signal.SIG_IGN for s in (signal.SIGUSR2, signal.SIGTERM)) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_the_process_wide_request_is_idle_outside_a_job():
    assert not STOP.installed and not STOP.requested(world_size=2)  # no collective without install()
