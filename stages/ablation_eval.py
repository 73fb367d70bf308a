"""DVC stages `ablation_eval@<variant>` and `ablation_seed_eval@<variant>-<seed>`: all zero-shot evaluations
of one run's checkpoint.

Usage: python stages/ablation_eval.py <variant> [--seed N]. Writes runs/ablation/<run>/eval/ (CSVs,
run_info.json), reports/metrics/ablation/<run>.json (retrieval, classification, segmentation,
compositional) and runs/items/<run>/ (per-item scores for the report's intervals).
"""

import argparse

from cosmos.ablation.run import evaluate_variant
from cosmos.stage import run_stage

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("variant")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    stage = f"ablation_eval@{args.variant}" if args.seed is None else f"ablation_seed_eval@{args.variant}-{args.seed}"
    run_stage(stage, lambda params: evaluate_variant(params, args.variant, args.seed))
