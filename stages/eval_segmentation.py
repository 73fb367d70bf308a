"""DVC stage `eval_segmentation`: zero-shot segmentation of the models named by `eval.source` (reference spec 7).

Reads: eval, model.name, seed, launcher. Writes: runs/eval/segmentation/ (run_info.json, per-class IoU CSVs,
overlay PNGs), reports/metrics/eval_segmentation.json.
`launcher=local` evaluates in this process; `submitit_local`/`slurm` submit a one-task job and block on it
(eval.launcher overrides its settings; job logs in runs/eval/submitit/segmentation/).
"""

from cosmos.eval.runner import run_segmentation, stage_main
from cosmos.stage import run_stage


def main(params: dict) -> None:
    stage_main(params, "segmentation", run_segmentation)


if __name__ == "__main__":
    run_stage("eval_segmentation", main)
