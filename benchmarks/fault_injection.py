"""Fault injection with figures: break the real ``pretrain`` stage, resume it, compare with an uninterrupted run.

A script, not a test (the targeted rows are also the tests of ``tests/faults``). It builds the debug benchmark's
data once, runs one uninterrupted reference project (12 optimizer steps, a checkpoint every 2, a learning
-curve point every 4), then for each case runs the same stage in a fresh project, breaks it, re-runs the same
command until it finishes (what ``dvc repro`` or a Slurm requeue does) and compares, tensor by tensor, the
final student, teacher and optimizer state, and the learning curve (``runs/curves/base.json``), with the
reference's. Cases:

- SIGKILL at ``--kills`` moments drawn uniformly over one run's wall time (start-up included);
- SIGTERM (what Slurm sends a preempted job) at ``--terms`` random moments, then the same command;
- the targeted faults of :data:`tests.faults.cases.TARGETED`: SIGKILL inside a checkpoint write, inside a
  dvclive metric row and inside dvclive's ``metrics.json``; a full disk (ENOSPC) during a checkpoint write;
  a corrupted newest checkpoint.

Prints a Markdown table (case, trials, identical final tensors, identical curves, what was seen) and exits
1 if any row falls short. Wall time: about 12 s per run on 2 quiet cores (``--kills 10 --terms 5``: ~8 min).

Usage::

    python benchmarks/fault_injection.py [--kills 10] [--terms 5] [--seed 0] [--work DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.faults.cases import TARGETED, Row, random_signals  # noqa: E402
from tests.faults.harness import make_data, make_project, run  # noqa: E402


def table(rows: list[Row]) -> str:
    lines = ["| case | trials | identical final tensors | identical learning curve | seen |",
             "|---|---|---|---|---|"]
    lines += [f"| {r.case} | {r.trials} | {r.identical}/{r.trials} | {r.curves}/{r.trials} | {r.detail} |"
              for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=10, help="random-moment SIGKILL runs")
    parser.add_argument("--terms", type=int, default=5, help="random-moment SIGTERM (preemption) runs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random moments")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp folder)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="faults-") as scratch:
        root = args.work or Path(scratch)
        start = time.monotonic()
        data = make_data(root / "data")
        reference = make_project(root / "reference", data)
        done = run(reference)
        if not done.finished:
            raise SystemExit(f"the uninterrupted reference run failed:\n{done.stderr[-2000:]}")
        span = done.seconds
        print(f"reference run: {done.seconds:.1f} s; random moments drawn in (0, {span:.1f} s)", flush=True)
        rows = []
        for trials, sig in ((args.kills, signal.SIGKILL), (args.terms, signal.SIGTERM)):
            if trials:
                rows.append(random_signals(root / "work", data, reference, trials=trials, sig=sig, seed=args.seed,
                                           span_s=span))
                print(f"  {rows[-1].case}: {rows[-1].identical}/{trials} identical", flush=True)
        for case in TARGETED:
            rows.append(case(root / "work", data, reference))
            print(f"  {rows[-1].case}: {rows[-1].identical}/{rows[-1].trials} identical", flush=True)
        print(f"\n{table(rows)}\n\n{sum(r.trials for r in rows)} broken runs in {time.monotonic() - start:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n", encoding="utf-8")
    return 0 if all(r.passed() for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
