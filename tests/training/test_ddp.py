"""Two gloo ranks on CPU: equal batches per rank, identical replicas after training, rank 0 checkpoints."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cosmos.method import DistillSwitches
from cosmos.models.checkpoint_io import strip_module_prefix
from cosmos.training.config import ModelConfig, OptimConfig, TrainConfig
from cosmos.training.distributed import init_distributed
from cosmos.training.pretrain import build_trainer

WORLD = 2
SWITCHES = DistillSwitches(global_crop_size=32, local_crop_size=16, local_crops=2, num_captions=4)


def _worker(rank: int, port: int, shards: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    world = init_distributed(torch.device("cpu"))
    train = TrainConfig(batch_size=8, epochs=1, num_workers=0, precision="fp32", data_fraction=1.0,
                        shuffle_buffer=16, shuffle_initial=4, checkpoint_every=0, keep_checkpoints=1, log_every=1,
                        resume="none", max_steps=3, device="cpu")
    trainer = build_trainer(out_dir=f"{out}/ckpt", shard_dir=shards, seed=0, model=ModelConfig("cosmos-tiny"),
                            optim=OptimConfig(lr=1e-3, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.1,
                                              warmup_steps=1),
                            train=train, switches=SWITCHES, world=world)
    position = trainer.fit()
    torch.save({"student": strip_module_prefix(trainer.student.state_dict()),
                "teacher": trainer.teacher.state_dict(), "step": position.step,
                "per_rank_batch": trainer.loader.batch}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_train_in_lockstep_and_rank0_checkpoints(tiny_shards, tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tiny_shards), str(tmp_path)), nprocs=WORLD, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD))
    assert r0["step"] == r1["step"] == 3 and r0["per_rank_batch"] == 4
    for part in ("student", "teacher"):
        assert all(torch.equal(r0[part][k], r1[part][k]) for k in r0[part]), part
    saved = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert saved == ["step-00000003.pt"]
    ckpt = torch.load(tmp_path / "ckpt" / saved[0], weights_only=True)
    assert all(k.startswith("module.") for k in ckpt["student"])  # the reference's DDP layout
