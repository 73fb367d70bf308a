"""A training step reads nothing from the device: the loop's only host sync is at ``log_every``
(``Trainer.check_steps``) and before checkpoints.

On a GPU every host read of a device tensor (``.item()``, ``.tolist()``, ``bool(t)``, ``float(t)``) stalls the
launch queue. There is no device here, so the test records every such read made directly by the project's
code during ``Trainer.step_on_device`` (torch's own host-side reads, e.g. of a CPU step counter, are not the
project's) and allows only reads of data that lives on the host in a GPU run too: the captions' EOT ends
(``text_ends``) and checks guarded by ``device.type == "cpu"``. ``benchmarks/gpu_check.py`` runs the same
steps under ``torch.cuda.set_sync_debug_mode`` on a GPU.
"""

from __future__ import annotations

import dataclasses
import linecache
import sys
from pathlib import Path

import pytest
import torch

import cosmos
from cosmos.training.config import ModelConfig
from cosmos.training.data import batch_to
from cosmos.training.pretrain import build_trainer
from tests.training.test_ddp_parity import OPTIM, TRAIN, switches_for

COSMOS_DIR = str(Path(cosmos.__file__).parent)
READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy")


def _host_data(line: str) -> bool:
    return "text_ends" in line or "ends.tolist()" in line or 'device.type == "cpu"' in line


@pytest.mark.parametrize("method,accum", [("cosmos", 1), ("cosmos", 2), ("silc", 1), ("clip", 2)])
def test_a_step_reads_nothing_from_the_device(method, accum, tiny_shards, tmp_path, monkeypatch):
    trainer = build_trainer(out_dir=tmp_path, shard_dir=tiny_shards, seed=0, model=ModelConfig("cosmos-tiny"),
                            optim=OPTIM, train=dataclasses.replace(TRAIN, accum_steps=accum),
                            switches=switches_for(method))
    batches = []
    for batch in trainer.loader.epoch(0):
        batch.pop("worker"), batch.pop("bad_samples")
        batches.append(batch_to(batch, trainer.device))
        if len(batches) == 2:
            break
    reads: list[str] = []

    def spy(name):
        real = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            caller = sys._getframe(1)
            if caller.f_code.co_filename.startswith(COSMOS_DIR):
                line = linecache.getline(caller.f_code.co_filename, caller.f_lineno).strip()
                if not _host_data(line):
                    reads.append(f"{caller.f_code.co_filename}:{caller.f_lineno}: .{name}: {line}")
            return real(self, *args, **kwargs)
        return read

    for name in READS:
        monkeypatch.setattr(torch.Tensor, name, spy(name))
    for batch in batches:
        trainer.step_on_device(batch)
    monkeypatch.undo()
    assert reads == []
    metrics = trainer.check_steps()  # the one read, at log_every
    assert set(metrics) == {"loss", *trainer.objective.switches.loss_names}
