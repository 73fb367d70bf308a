"""DVC stage `eval_compositional`: zero-shot compositional of the models named by `eval.source` (reference spec 7).

Reads: eval, model.name, seed, launcher. Writes: runs/eval/compositional/ (run_info.json, nothing else),
reports/metrics/eval_compositional.json.
`launcher=local` evaluates in this process; `submitit_local`/`slurm` submit a one-task job and block on it
(eval.launcher overrides its settings; job logs in runs/eval/submitit/compositional/).
"""

from cosmos.eval.runner import run_compositional, stage_main
from cosmos.stage import run_stage


def main(params: dict) -> None:
    stage_main(params, "compositional", run_compositional)


if __name__ == "__main__":
    run_stage("eval_compositional", main)
