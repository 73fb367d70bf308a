"""Train and evaluate one ablation variant: what the `ablation_train@<v>` and `ablation_eval@<v>` stages call.

A variant's folder `runs/ablation/<v>/` holds `checkpoints/` (final.pt in the reference layout, as the
base `pretrain` stage writes it) and `eval/` (CSVs). Metrics go to git-tracked
`reports/metrics/ablation/<v>.json` (the four evaluations, in the base eval stages' schema) and
`<v>_train.json` (the training summary); per-item scores (for the report's intervals) go to
`runs/items/<v>/<task>.npz`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from cosmos.ablation.ahead import train_or_collect, training_stage
from cosmos.ablation.grid import extra_seed_runs, run_name, variant_params
from cosmos.eval.runner import items_path, run_classification, run_compositional, run_retrieval, run_segmentation
from cosmos.io.atomic import atomic_dir, atomic_write_json
from cosmos.io.provenance import write_run_info
from cosmos.report.intervals import items_npz
from cosmos.training.distributed import process_rank
from cosmos.training.validation import read_curve

ROOT = Path("runs/ablation")
METRICS = Path("reports/metrics/ablation")
EVALS = {
    "retrieval": run_retrieval,
    "classification": run_classification,
    "segmentation": run_segmentation,
    "compositional": run_compositional,
}


def curve_path(run: str) -> Path:
    """The learning curves of a run (``cosmos.training.validation.read_curve``); ``base`` = stage pretrain."""
    return Path("runs/curves") / f"{run}.json"


def variant_dir(name: str) -> Path:
    return ROOT / name


def variant_metrics_path(name: str) -> Path:
    """Git-tracked metrics of a variant's evaluations (DVC metrics, readable by `dvc exp show`)."""
    return METRICS / f"{name}.json"


def _run_params(params: dict[str, Any], name: str, seed: int | None) -> tuple[str, dict[str, Any]]:
    """(run name, params) of variant `name` at the top-level seed or at extra seed `seed`."""
    vparams = variant_params(params, name)
    if seed is not None:
        if (name, seed) not in extra_seed_runs(params):
            raise ValueError(f"{name} at seed {seed} is not in the grid: ablation.replicated x ablation.extra_seeds")
        vparams["seed"] = seed
    return run_name(name, seed), vparams


def train_variant(params: dict[str, Any], name: str, seed: int | None = None) -> dict[str, Any]:
    """Pre-train variant `name` (at extra seed `seed`, if given) into runs/ablation/<run>/; returns the summary.

    With launcher=slurm, a job that `python -m cosmos.ablation.parallel` submitted ahead for exactly these
    inputs is waited on instead of submitting another (cosmos.ablation.ahead); the outputs are the same.
    """
    run, vparams = _run_params(params, name, seed)
    stage, kind = training_stage(name, seed)
    summary = train_or_collect(vparams, variant_dir(run), Path(vparams["data"]["root"]) / "shards", stage, kind)
    if process_rank() != 0:  # under torchrun / srun every rank runs the stage; rank 0 alone writes
        return summary
    atomic_write_json(curve_path(run), read_curve(variant_dir(run) / "live", vparams["train"]["batch_size"]))
    atomic_write_json(METRICS / f"{run}_train.json", summary)
    return summary


def _variant_eval_config(vparams: dict[str, Any], name: str, weights: str) -> dict[str, Any]:
    """The base `eval` section pointed at the variant's checkpoint, evaluating only the weights the report
    shows (`ablation.report_weights`); pictures are left to the base run."""
    cfg = copy.deepcopy(vparams["eval"])
    cfg["weights"] = weights
    cfg["source"] = {**cfg["source"], "kind": "checkpoint", "path": str(variant_dir(name) / "checkpoints")}
    cfg["pictures"] = {**cfg.get("pictures", {}), "cross_attention": 0}
    cfg["segmentation"] = {**cfg["segmentation"], "pictures": 0}
    return cfg


def evaluate_variant(params: dict[str, Any], name: str, seed: int | None = None) -> dict[str, Any]:
    """Run every evaluation of the base pipeline on variant `name` (at extra seed `seed`, if given); writes
    reports/metrics/ablation/<run>.json and runs/items/<run>/."""
    name, vparams = _run_params(params, name, seed)
    cfg = _variant_eval_config(vparams, name, params["ablation"]["report_weights"])
    metrics: dict[str, Any] = {"variant": name, "seed": vparams["seed"]}
    items: dict[str, dict] = {task: {} for task in EVALS}
    with atomic_dir(variant_dir(name) / "eval") as tmp:
        for task, fn in EVALS.items():
            (tmp / task).mkdir()
            metrics[task] = fn(cfg, vparams["model"]["name"], tmp / task, items[task])
        write_run_info(tmp, f"ablation_eval@{name}", {"eval": cfg, "model": vparams["model"]}, vparams.get("seed"))
    with atomic_dir(items_path(name, "x").parent) as tmp:
        for task, got in items.items():
            (tmp / f"{task}.npz").write_bytes(items_npz(got))
    atomic_write_json(variant_metrics_path(name), metrics)
    return metrics
