"""DVC stage `ablation_train@<variant>`: pre-train one variant of the ablation grid.

Usage: python stages/ablation_train.py <variant>. Reads the base sections plus ablation.variants.<variant>.
Writes runs/ablation/<variant>/checkpoints (final.pt + run_info.json) and reports/metrics/ablation/<variant>_train.json.
"""

import sys

from cosmos.ablation.run import train_variant
from cosmos.stage import run_stage

if __name__ == "__main__":
    run_stage(f"ablation_train@{sys.argv[1]}", lambda params: train_variant(params, sys.argv[1]))
