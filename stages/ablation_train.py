"""DVC stages `ablation_train@<variant>` and `ablation_seed_train@<variant>-<seed>`: pre-train one run of the grid.

Usage: python stages/ablation_train.py <variant> [--seed N]. Reads the base sections plus
ablation.variants.<variant>; `--seed` trains the replicate at extra seed N (ablation.extra_seeds).
Writes runs/ablation/<run>/checkpoints (final.pt + run_info.json) and reports/metrics/ablation/<run>_train.json,
where <run> is <variant> or <variant>-s<N>.
"""

import argparse

from cosmos.ablation.ahead import training_stage
from cosmos.ablation.run import train_variant
from cosmos.stage import run_stage

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("variant")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    run_stage(training_stage(args.variant, args.seed)[0], lambda params: train_variant(params, args.variant, args.seed))
