"""Repair a dvclive folder before a resumed run appends to it.

dvclive appends one row per logged value to ``plots/metrics/**/<name>.tsv`` and rewrites ``metrics.json``
(the summary) at every step, neither atomically. A run killed mid-write leaves a row without its line end
(the next append would glue onto it and be misread as another step's value) or a truncated
``metrics.json`` (dvclive's resume then fails to parse it, and the run cannot resume at all). And a run
killed between checkpoints has logged steps past the checkpoint it resumes from; the resumed run logs
them again. :func:`repair_live` brings the folder back to the state it had at the checkpoint's step, so a
resumed run's curves are row for row those of an uninterrupted run.
"""

from __future__ import annotations

import json
from pathlib import Path

from cosmos.io.atomic import atomic_write_text

__all__ = ["repair_live"]


def repair_live(live_dir: str | Path, step: int) -> list[str]:
    """Drop partial rows and rows past ``step`` from every metric TSV; delete an unreadable summary.

    Args:
        live_dir: the ``Live(dir=...)`` folder of the interrupted run.
        step: the optimizer step the run resumes from (rows with a larger ``step`` are re-logged).

    Returns:
        One phrase per repaired file (e.g. ``"plots/metrics/train/loss.tsv: 2 rows dropped"``), for the log.
    """
    root = Path(live_dir)
    done = []
    for tsv in sorted((root / "plots" / "metrics").rglob("*.tsv")) if root.is_dir() else []:
        dropped = _trim_tsv(tsv, step)
        if dropped:
            done.append(f"{tsv.relative_to(root)}: {dropped} row{'s' * (dropped != 1)} dropped")
    summary = root / "metrics.json"
    if summary.is_file():
        try:
            json.loads(summary.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):  # dvclive rewrites it at the next step
            summary.unlink()
            done.append("metrics.json: unreadable, removed")
    return done


def _trim_tsv(path: Path, step: int) -> int:
    """Rewrite ``path`` without its partial last row and its rows past ``step``; the number dropped."""
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines(keepends=True)
    if not lines:
        return 0
    header, rows = lines[0], lines[1:]
    if not header.endswith(("\n", "\r")):  # killed while writing the header: dvclive rewrites it
        path.unlink()
        return 0
    columns = header.rstrip("\r\n").split("\t")
    if "step" not in columns:  # not a step-indexed series: nothing to align with the checkpoint
        return 0
    at = columns.index("step")
    kept = [r for r in rows if r.endswith(("\n", "\r")) and _step_of(r, at) is not None and _step_of(r, at) <= step]
    if len(kept) == len(rows):
        return 0
    if kept:
        atomic_write_text(path, header + "".join(kept))
    else:  # dvclive writes the header again when the file does not exist
        path.unlink()
    return len(rows) - len(kept)


def _step_of(row: str, at: int) -> int | None:
    cols = row.rstrip("\r\n").split("\t")
    try:
        return int(float(cols[at]))
    except (IndexError, ValueError):
        return None

