"""DVC stage `ablation_eval@<variant>`: all zero-shot evaluations of one variant's checkpoint.

Usage: python stages/ablation_eval.py <variant>. Writes runs/ablation/<variant>/eval/ (CSVs, run_info.json)
and reports/metrics/ablation/<variant>.json (retrieval, classification, segmentation, compositional).
"""

import sys

from cosmos.ablation.run import evaluate_variant
from cosmos.stage import run_stage

if __name__ == "__main__":
    run_stage(f"ablation_eval@{sys.argv[1]}", lambda params: evaluate_variant(params, sys.argv[1]))
