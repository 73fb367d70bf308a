"""DVC stages `ablation_eval@<variant>` and `ablation_seed_eval@<variant>-<seed>`: all zero-shot evaluations
of one run's checkpoint.

Usage: python stages/ablation_eval.py <variant> [--seed N]. Writes runs/ablation/<run>/eval/ (CSVs,
run_info.json), reports/metrics/ablation/<run>.json (retrieval, classification, segmentation,
compositional) and runs/items/<run>/ (per-item scores for the report's intervals).
`launcher=local` evaluates in this process; `submitit_local`/`slurm` run the whole evaluation as one
one-task job (eval.launcher overrides its settings; job logs in runs/ablation/<run>/eval-submitit/) and
block on it: the job writes the outputs above only at its end, after all four evaluations succeeded.
"""

import argparse

from cosmos.ablation.grid import run_name
from cosmos.ablation.run import evaluate_variant, variant_dir
from cosmos.eval.launch import eval_launcher, run_evaluation
from cosmos.stage import run_stage


def main(params: dict, variant: str, seed: int | None, stage: str) -> None:
    run = run_name(variant, seed)
    launcher = eval_launcher(params.get("launcher"), params["eval"].get("launcher"), job_name=f"cosmos-eval-{run}")
    run_evaluation(evaluate_variant, {"params": params, "name": variant, "seed": seed}, launcher,
                   variant_dir(run) / "eval-submitit", device=params["eval"].get("device", "auto"), stage=stage)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("variant")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    stage = f"ablation_eval@{args.variant}" if args.seed is None else f"ablation_seed_eval@{args.variant}-{args.seed}"
    run_stage(stage, lambda params: main(params, args.variant, args.seed, stage))
