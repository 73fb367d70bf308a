"""The bad-input table: every case of ``tests/data/bad/cases.py`` through the stage a user runs, and what it did.

A script, not a test (the same cases are ``tests/data/bad/test_bad_inputs.py``). Generates the tiny synthetic
benchmark through the real ``download`` and ``shard`` stages, then for each case writes its broken input into
a fresh project folder, runs the stage (``python stages/<name>.py`` semantics; ``pretrain`` in a child
process), and prints a Markdown table: case, outcome (the one line the user reads, or what was skipped and
counted), and PASS or the assertion that failed. Exits 1 if a case fails. About 2 minutes on 2 cores.

Usage::

    python benchmarks/bad_inputs.py [--work DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.data.bad.cases import CASES  # noqa: E402
from tests.data.bad.corpus import make_bench  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp folder)")
    args = parser.parse_args(argv)
    rows, failed = [], 0
    with tempfile.TemporaryDirectory(prefix="bad-inputs-") as scratch:
        start = time.monotonic()
        bench = make_bench(args.work or Path(scratch))
        for label, case in CASES:
            try:
                seen = case(bench)
                rows.append((label, seen.outcome.replace("|", "\\|"), "pass"))
            except AssertionError as err:
                failed += 1
                rows.append((label, str(err).splitlines()[0][:200].replace("|", "\\|"), "FAIL"))
            print(f"  {label}: {rows[-1][2]}", flush=True)
        lines = ["| case | outcome | |", "|---|---|---|", *(f"| {a} | {b} | {c} |" for a, b, c in rows)]
        print("\n" + "\n".join(lines) + f"\n\n{len(rows)} cases, {failed} failed, in {time.monotonic() - start:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
