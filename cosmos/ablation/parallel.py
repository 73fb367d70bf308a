"""Train a whole ablation grid concurrently on Slurm, each variant still a DVC stage: submit ahead, then collect.

Usage (at the repository root, ``launcher=slurm``)::

    python -m cosmos.ablation.parallel [OVERRIDE ...] [--targets STAGE ...] [--submit-only]

1. With Hydra overrides (``ablation=full launcher=slurm launcher.partition=gpu ...``), compose them into
   ``params.yaml`` first, as ``dvc exp run -S`` would; without, use ``params.yaml`` as it is.
2. Ask ``dvc status`` which training stages of the grid (``ablation_train@*``, ``ablation_seed_train@*``)
   the targets need (default: the whole pipeline), and bring their upstream stages (data) up to date with
   ``dvc repro`` first, since the jobs read the shards.
3. Submit every changed training stage's job at once, with the very arguments the stage would use, and
   record each beside its logs (:mod:`cosmos.ablation.ahead`). A record left by an earlier run for the same
   inputs whose job is still queued, running or completed is kept, so re-running the command after a
   failure or a lost terminal collects those jobs instead of training them again.
4. Run ``dvc repro [targets]``. Each training stage waits on its own job, and the jobs run side by side on
   the cluster, so the grid costs about its longest job instead of the sum. DVC checks and caches every stage
   as usual. A failed job fails its stage with one line naming the stage, the job id and its log folder, and
   ``dvc repro`` stops there as usual; the other jobs run on and stay recorded, and running this command
   again (after the fix) collects them.

Not ``dvc repro --keep-going``: a stage interrupted by Ctrl-C is, to DVC, a failed stage, and with
``--keep-going`` DVC would go on to the next stages (and submit, e.g., ``pretrain``) after the interrupt.

Ctrl-C cancels every job this command submitted or kept, then exits 130. With ``--submit-only`` it stops
after step 3: a later plain ``dvc repro`` collects the jobs (and nothing cancels them on Ctrl-C but
``scancel``).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cosmos.ablation.ahead import (JobRecord, cancel_jobs, decide, drop_record, read_record, slurm_state,
                                   stage_digest, submit_ahead, training_stage, training_stages)
from cosmos.ablation.grid import run_name
from cosmos.ablation.run import _run_params, variant_dir
from cosmos.training.launch import sigint_ignored

Status = Callable[[list[str], bool], dict[str, Any]]


class GridError(RuntimeError):
    """The grid cannot be submitted (not at a repository root, wrong launcher, DVC failed); says the fix."""


def dvc_status(targets: list[str], with_deps: bool) -> dict[str, Any]:
    """``dvc status --json`` of ``targets`` (all stages when empty): changed stage name -> what changed."""
    cmd = [sys.executable, "-m", "dvc", "status", "--json", *(["--with-deps"] if with_deps else []), *targets]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise GridError(f"`dvc status` failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()}")
    text = proc.stdout.strip()
    return json.loads(text) if text.startswith("{") else {}


def plan(grid: Sequence[str], targets: list[str], status: Status) -> tuple[list[str], list[str]]:
    """(upstream stages to reproduce first, training stages to submit) for ``dvc repro targets``.

    The training stages are the grid's stages that DVC reports changed among the targets and their
    ancestors; the upstream stages are the other changed ancestors of those training stages (data).
    """
    changed = status(targets, True)
    needed = [s for s in grid if s in changed]
    if not needed:
        return [], []
    upstream = [s for s in status(needed, True) if s not in grid]
    return upstream, needed


def submit_grid(params: dict[str, Any], stages: list[str], state: Callable[[str], str] = slurm_state,
                submit: Callable[..., JobRecord] = submit_ahead) -> list[JobRecord]:
    """Submit the job of every stage in ``stages`` (or adopt a matching live record); the records, in order."""
    from cosmos.training.pretrain import pretrain_job

    grid = training_stages(params)
    records: list[JobRecord] = []
    try:
        for stage in stages:
            variant, seed = grid[stage]
            _, vparams = _run_params(params, variant, seed)
            out = variant_dir(run_name(variant, seed))
            shards = Path(vparams["data"]["root"]) / "shards"
            kind = training_stage(variant, seed)[1]
            log_dir = out / "submitit"
            old = read_record(log_dir)
            verdict = "none"
            if old is not None:
                digest = stage_digest(pretrain_job(vparams, out, shards), kind, vparams["data"]["root"])
                job_state = state(old.job_id)
                verdict = decide(old, digest, job_state)
                if verdict == "use":
                    print(f"{stage}: keeping slurm job {old.job_id} ({job_state}), submitted earlier with the same "
                          "inputs", flush=True)
                    records.append(old)
                    continue
                why = "other inputs" if verdict == "stale" else f"the same inputs, but it is {job_state}"
                print(f"{stage}: replacing slurm job {old.job_id} (submitted with {why})", flush=True)
                cancel_jobs([old.job_id])
                drop_record(log_dir)
            records.append(submit(vparams, out, shards, stage, kind))
    except BaseException:
        if records:  # a half-submitted grid must not run on behind a failure or a Ctrl-C
            cancel_all(params, records)
        raise
    return records


def cancel_all(params: dict[str, Any], records: list[JobRecord]) -> None:
    """Cancel the jobs of ``records`` and delete the records still on disk (Ctrl-C, or a failed submission)."""
    if not records:
        return
    cancel_jobs(r.job_id for r in records)
    drop_records(params, records)
    print(f"cancelled slurm jobs {', '.join(r.job_id for r in records)}", file=sys.stderr, flush=True)


def drop_records(params: dict[str, Any], records: list[JobRecord]) -> None:
    """Delete the records of ``records`` that are still on disk (none that a later submission replaced)."""
    grid = training_stages(params)
    for r in records:
        if r.stage in grid:
            variant, seed = grid[r.stage]
            log_dir = variant_dir(run_name(variant, seed)) / "submitit"
            left = read_record(log_dir)
            if left is not None and left.job_id == r.job_id:
                drop_record(log_dir)


def run_dvc(args: list[str], on_interrupt: Callable[[], None] = lambda: None) -> int:
    """Run ``dvc <args>`` in the foreground. On Ctrl-C, call ``on_interrupt`` at once (cancel the jobs), let dvc
    finish its own clean-up (the interrupted stage fails, and dvc stops at that failure), then re-raise."""
    proc = subprocess.Popen([sys.executable, "-m", "dvc", *args])
    try:
        return proc.wait()
    except KeyboardInterrupt:
        with sigint_ignored():
            on_interrupt()
            try:  # the terminal's Ctrl-C reached dvc too: its stage cancels its own job and exits
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # only this process was interrupted: pass it on
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
        raise


def uncollected(params: dict[str, Any], records: list[JobRecord]) -> list[JobRecord]:
    """The records no stage consumed: jobs that `dvc repro` did not reach (it stopped, or the targets skip them)."""
    grid = training_stages(params)
    left = []
    for r in records:
        variant, seed = grid[r.stage]
        found = read_record(variant_dir(run_name(variant, seed)) / "submitit")
        if found is not None and found.job_id == r.job_id:
            left.append(found)
    return left


def main(argv: list[str] | None = None, status: Status = dvc_status) -> int:
    parser = argparse.ArgumentParser(prog="python -m cosmos.ablation.parallel",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides to compose into params.yaml first, e.g. "
                        "ablation=full launcher=slurm launcher.partition=gpu")
    parser.add_argument("--targets", nargs="+", default=[], help="dvc repro targets (default: the whole pipeline)")
    parser.add_argument("--submit-only", action="store_true", help="submit, record and stop; `dvc repro` collects")
    args = parser.parse_args(argv)
    if not Path("dvc.yaml").is_file():
        raise GridError(f"no dvc.yaml in {Path.cwd()}: run this at the repository root")
    if args.overrides:
        _compose(args.overrides)
    from cosmos.config.params import load_params

    params = load_params("params.yaml")
    launcher = (params.get("launcher") or {}).get("name")
    if launcher != "slurm":
        raise GridError(f"launcher.name={launcher!r} in params.yaml: only launcher=slurm trains a grid in parallel "
                        "(add the override launcher=slurm, with the launcher.* keys of your cluster); plain "
                        "`dvc repro` trains it one variant after another")
    grid = list(training_stages(params))
    upstream, todo = plan(grid, args.targets, status)
    if upstream:
        print(f"bringing {', '.join(upstream)} up to date before submitting", flush=True)
        if run_dvc(["repro", *upstream]) != 0:
            raise GridError(f"`dvc repro {' '.join(upstream)}` failed (above); nothing was submitted")
        still = status(todo, False)
        todo = [s for s in grid if s in still]
    records: list[JobRecord] = []
    try:
        records = submit_grid(params, todo)
        print(f"{len(records)} training job(s) of the grid on Slurm: "
              f"{', '.join(f'{r.stage}={r.job_id}' for r in records) or 'none (nothing changed)'}", flush=True)
        if args.submit_only:
            print("submitted only: `dvc repro` collects them (scancel <ids> to cancel)", flush=True)
            return 0
        # Jobs are cancelled at once, records dropped only once dvc has stopped: a stage that DVC still starts
        # meanwhile finds its record, waits on the cancelled job and fails, rather than submitting anew.
        rc = run_dvc(["repro", *args.targets], on_interrupt=lambda: cancel_jobs(r.job_id for r in records))
    except KeyboardInterrupt:
        with sigint_ignored():
            cancel_all(params, records)
        print("interrupted: the grid's jobs are cancelled; DVC recorded only the stages that had finished",
              file=sys.stderr, flush=True)
        return 130
    left = uncollected(params, records)
    if left:
        print(f"not collected, still recorded (the next run of this command or `dvc repro` collects them; "
              f"scancel to drop them): {', '.join(f'{r.stage}={r.job_id}' for r in left)}", file=sys.stderr,
              flush=True)
    if rc != 0:
        print(f"dvc repro failed (exit {rc}); the failed stage is named above with its job id and logs. Fix it, "
              "then run this command again: it collects the jobs above instead of training them again",
              file=sys.stderr, flush=True)
    return rc


def _compose(overrides: list[str]) -> None:
    from hydra.errors import HydraException

    from cosmos.config.compose import compose_params, explain_composition_error
    from cosmos.io.atomic import atomic_write_text

    try:
        text = compose_params(overrides, config_dir=Path("conf"))
    except HydraException as err:
        raise GridError(f"compose failed: {explain_composition_error(err, Path('conf'))}; params.yaml is "
                        "unchanged") from err
    atomic_write_text("params.yaml", text)
    print(f"wrote params.yaml from conf/ with {' '.join(overrides)}", flush=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, ValueError, FileNotFoundError, KeyError) as err:  # GridError, LaunchError, bad params
        print(f"cosmos.ablation.parallel failed: {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(1)
