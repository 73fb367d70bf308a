"""DVC stage `eval_retrieval`: zero-shot retrieval of the models named by `eval.source` (reference spec 7).

Reads: eval, model.name, seed, launcher. Writes: runs/eval/retrieval/ (run_info.json, cross-attention PNGs),
reports/metrics/eval_retrieval.json.
`launcher=local` evaluates in this process; `submitit_local`/`slurm` submit a one-task job and block on it
(eval.launcher overrides its settings; job logs in runs/eval/submitit/retrieval/).
"""

from cosmos.eval.runner import run_retrieval, stage_main
from cosmos.stage import run_stage


def main(params: dict) -> None:
    stage_main(params, "retrieval", run_retrieval)


if __name__ == "__main__":
    run_stage("eval_retrieval", main)
