"""DVC stage `pretrain`: train the student and its EMA teacher on the training shards.

Reads: seed, data.root, model, optim, train, launcher, distill. Writes: runs/pretrain/checkpoints
(final.pt in the reference layout + run_info.json), runs/pretrain/live (dvclive curves),
reports/metrics/pretrain.json, runs/curves/base.json (learning curves). `launcher=local` trains in this process; `submitit_local`/`slurm` submit a
job and block on it.
"""

from pathlib import Path

from cosmos.ablation.run import curve_path
from cosmos.io.atomic import atomic_write_json
from cosmos.stage import run_stage
from cosmos.training.distributed import process_rank
from cosmos.training.pretrain import launch_pretrain
from cosmos.training.validation import read_curve


def main(params: dict) -> None:
    summary = launch_pretrain(params, "runs/pretrain", Path(params["data"]["root"]) / "shards")
    if process_rank() != 0:  # under torchrun / srun every rank runs this script; rank 0 alone writes
        return
    atomic_write_json(curve_path("base"), read_curve("runs/pretrain/live", params["train"]["batch_size"]))
    atomic_write_json("reports/metrics/pretrain.json", summary)


if __name__ == "__main__":
    run_stage("pretrain", main)
