"""DVC stage `pretrain`: train the student and its EMA teacher on the training shards.

Reads: seed, data.root, model, optim, train, launcher, distill. Writes: runs/pretrain/checkpoints
(final.pt in the reference layout + run_info.json), runs/pretrain/live (dvclive curves),
reports/metrics/pretrain.json. `launcher=local` trains in this process; `submitit_local`/`slurm` submit a
job and block on it.
"""

from pathlib import Path

from cosmos.io.atomic import atomic_write_json
from cosmos.stage import run_stage
from cosmos.training.launch import launch
from cosmos.training.pretrain import parse_sections, run_pretrain

OUT = Path("runs/pretrain")


def main(params: dict) -> None:
    sections = parse_sections(params)  # fail on a bad config before any work
    kwargs = {  # absolute: queued experiments and submitit jobs run elsewhere
        "params": params,
        "out_dir": str((OUT / "checkpoints").resolve()),
        "live_dir": str((OUT / "live").resolve()),
        "shard_dir": str((Path(params["data"]["root"]) / "shards").resolve()),
    }
    summary = launch(run_pretrain, kwargs, sections["launcher"], OUT / "submitit")
    if not summary["finished"]:
        raise RuntimeError(f"training stopped at step {summary['steps']} (train.max_steps); outputs are partial")
    atomic_write_json("reports/metrics/pretrain.json", summary)


if __name__ == "__main__":
    run_stage("pretrain", main)
