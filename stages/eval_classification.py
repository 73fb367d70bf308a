"""DVC stage `eval_classification`: zero-shot classification of the models named by `eval.source` (reference spec 7).

Reads: eval, model.name, seed, launcher. Writes: runs/eval/classification/ (run_info.json, per-class accuracy CSVs),
reports/metrics/eval_classification.json.
`launcher=local` evaluates in this process; `submitit_local`/`slurm` submit a one-task job and block on it
(eval.launcher overrides its settings; job logs in runs/eval/submitit/classification/).
"""

from cosmos.eval.runner import run_classification, stage_main
from cosmos.stage import run_stage


def main(params: dict) -> None:
    stage_main(params, "classification", run_classification)


if __name__ == "__main__":
    run_stage("eval_classification", main)
