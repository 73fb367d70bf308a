"""Where the default pipeline's pre-training time goes: data loading against the training step (a script, not a test).

Builds the run of the ``pretrain`` stage from ``params.yaml`` (``cosmos.training.pretrain.build_trainer``: the
tiny CPU model, the real ``TrainLoader`` over the synthetic shards, AdamW, the EMA teacher) and times, in
one process:

- data: ``--batches`` batches of the loader (decode, multi-crop, text crop, tokenize, collate), in-process;
- step: ``Trainer.train_step`` on those batches (objective, backward, EMA, AdamW), after one warm-up step;

and prints ms per batch, samples/s of each and of both in series (what ``train.num_workers=0`` gives).
``--profile`` adds the ``torch.profiler`` top ops of one more step. Needs the shards: ``dvc repro shard``.

Usage::

    python benchmarks/default_step.py [--batches 8] [--profile] [section.key=value ...]
    python benchmarks/default_step.py model.math_attention=false      # one speed-up off
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


def override(params: dict, items: list[str]) -> dict:
    """``section.key=value`` (YAML value) into ``params``; unknown keys are left to the config check."""
    for item in items:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        if not name or section not in params:
            raise SystemExit(f"override {item!r} is not section.key=value with a params.yaml section")
        params[section][name] = yaml.safe_load(value)
    return params


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=8, help="timed batches (data and step each)")
    parser.add_argument("--profile", action="store_true", help="also print the top ops of one profiled step")
    parser.add_argument("overrides", nargs="*", help="section.key=value, as `dvc exp run -S`")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO_ROOT))
    from cosmos.training.pretrain import build_trainer, parse_sections

    params = override(yaml.safe_load((REPO_ROOT / "params.yaml").read_text()), args.overrides)
    shards = REPO_ROOT / params["data"]["root"] / "shards"
    if not (shards / "manifest.json").exists():
        raise SystemExit(f"{shards} has no manifest.json: run `dvc repro shard` first")
    s = parse_sections(params)
    trainer = build_trainer(out_dir=tempfile.mkdtemp(), shard_dir=shards, seed=params["seed"], model=s["model"],
                            optim=s["optim"], train=s["train"], switches=s["switches"])
    batch = trainer.loader.batch
    loader = iter(trainer.loader.epoch(0))
    next(loader)  # opens the first shard and fills the shuffle buffer
    start = time.perf_counter()
    batches = [next(loader) for _ in range(args.batches + 2)]
    data_s = (time.perf_counter() - start) / len(batches)
    for b in batches:
        b.pop("worker"), b.pop("bad_samples")
    trainer.train_step(batches[0])  # warm-up: allocator, kernels, autocast caches
    trainer.position.step += 1
    start = time.perf_counter()
    for b in batches[1:-1]:
        trainer.train_step(b)
        trainer.position.step += 1
    step_s = (time.perf_counter() - start) / args.batches
    print(f"{s['switches'].method} {s['model'].name} batch={batch} precision={s['train'].precision} "
          f"overrides={args.overrides}")
    print(f"data {1e3 * data_s:.0f} ms/batch ({batch / data_s:.1f} samples/s) | step {1e3 * step_s:.0f} ms "
          f"({batch / step_s:.1f} samples/s) | in series {batch / (data_s + step_s):.1f} samples/s")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            trainer.train_step(batches[-1])
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
