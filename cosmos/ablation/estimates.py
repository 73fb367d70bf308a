"""The report's numbers: each (variant, metric) as a mean over its seeds with a bootstrap interval.

A row of the report is a *variant*; its runs are the variant at the top-level seed plus its replicates
(:func:`cosmos.ablation.grid.runs_of`). Each run's metrics JSON gives the point values and its per-item
scores (``runs/items/<run>/<task>.npz``) the bootstrap (:mod:`cosmos.report.intervals`). Metric paths are
the metrics JSON's dotted paths (``retrieval.teacher.image_to_text_R@1``); two derived families are
computed from the bootstrap replicates of their parts, so their intervals are exact too:

- ``retrieval.<w>.mean_R@1`` = (I2T R@1 + T2I R@1) / 2, the retrieval figure the paper claims are judged on;
- ``compositional.<w>.suppression.gap_{obj,att}`` = dominant - minor probe accuracy (same scenes, paired).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cosmos.ablation.grid import BASE, runs_of, variant_names
from cosmos.eval.compositional import suppression_gaps
from cosmos.report.intervals import Estimate, ItemScores, estimate, load_items
from cosmos.report.tables import lookup

EVAL_TASKS = ("retrieval", "classification", "segmentation", "compositional")
_ALL_PROBES = ["dominant_obj", "minor_obj", "dominant_att", "minor_att"]


@dataclass
class RunResults:
    """Metrics (``{run: {task: metrics}}``) and per-item scores (``{run: {path: ItemScores}}``) of every run."""

    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    items: dict[str, dict[str, ItemScores]] = field(default_factory=dict)

    def runs(self, params: Mapping[str, Any], variant: str) -> list[str]:
        """The runs of ``variant`` that have metrics, top-level seed first."""
        return [r for r in runs_of(params, variant) if r in self.metrics]


def _load_run_items(folder: Path) -> dict[str, ItemScores]:
    out = {}
    for task in EVAL_TASKS:
        path = folder / f"{task}.npz"
        if path.exists():
            out.update({f"{task}.{k}": v for k, v in load_items(path).items()})
    return out


def load_run_results(params: Mapping[str, Any], metrics_dir: str | Path = "reports/metrics",
                     items_dir: str | Path = "runs/items") -> RunResults:
    """Every run of the grid whose metrics exist: ``base`` from the ``eval_*`` stages, the others from
    ``<metrics_dir>/ablation/<run>.json``; items from ``<items_dir>/<run>/``."""
    from cosmos.ablation.grid import extra_seed_runs, run_name

    res = RunResults()
    base = {}
    for task in EVAL_TASKS:
        path = Path(metrics_dir) / f"eval_{task}.json"
        if path.exists():
            base[task] = json.loads(path.read_text())
    names = [*variant_names(params), *(run_name(v, s) for v, s in extra_seed_runs(params))]
    if base:
        res.metrics[BASE] = base
    for run in names:
        path = Path(metrics_dir) / "ablation" / f"{run}.json"
        if path.exists():
            res.metrics[run] = json.loads(path.read_text())
    for run in res.metrics:
        res.items[run] = _load_run_items(Path(items_dir) / run)
    return res


def _run_estimate(res: RunResults, runs: list[str], path: str, key: str) -> Estimate | None:
    """Estimate of a stored metric over ``runs``; the point alone (no interval) when a run lacks items."""
    points = [lookup(res.metrics[r], path) for r in runs]
    if not runs or any(p is None for p in points):
        return None
    per_seed = [res.items.get(r, {}).get(path) for r in runs]
    if any(s is None for s in per_seed):
        mean = float(np.mean(points))
        return Estimate(mean, np.full(1, np.nan), len(runs))
    return estimate(per_seed, key)


def variant_estimate(res: RunResults, params: Mapping[str, Any], variant: str, path: str) -> Estimate | None:
    """The mean over the variant's seeds of metric ``path`` with its interval, or None when not measured."""
    runs = res.runs(params, variant)
    head, _, name = path.rpartition(".")
    if name == "mean_R@1" and head.startswith("retrieval."):
        a = variant_estimate(res, params, variant, f"{head}.image_to_text_R@1")
        b = variant_estimate(res, params, variant, f"{head}.text_to_image_R@1")
        if a is None or b is None:
            return None
        return Estimate((a.point + b.point) / 2, (a.replicates + b.replicates) / 2, min(a.seeds, b.seeds))
    gaps = suppression_gaps(_ALL_PROBES)
    if name in gaps and head.endswith(".suppression"):
        dom, minor = (variant_estimate(res, params, variant, f"{head}.{p}") for p in gaps[name])
        return None if dom is None or minor is None else dom - minor
    # One seed draw per variant, shared by its metrics: the parts of a derived metric see the same seeds.
    return _run_estimate(res, runs, path, variant)
