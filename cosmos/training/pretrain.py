"""Build a whole pre-training run from typed configs and run it: the one function the ``pretrain`` stage calls.

:func:`build_trainer` seeds, builds the student (:func:`cosmos.method.build_student`), the EMA teacher
(when the switches need one), the objective, the loader, AdamW and the per-step schedules, and resumes
per ``train.resume``. :func:`pretrain` adds the progress bar and dvclive logging, trains, and returns the
summary metrics.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cosmos import schedules
from cosmos.method import DistillSwitches, Objective, SampleTransform, build_student, collate
from cosmos.models.checkpoint_io import load_checkpoint_file
from cosmos.teacher.ema import EMATeacher
from cosmos.text.tokenizer import build_tokenizer
from cosmos.losses.gather import Gathering
from cosmos.training.accumulation import GradCache
from cosmos.training.checkpoint import CheckpointDir
from cosmos.training.compiled import compile_models
from cosmos.training.config import ModelConfig, OptimConfig, TrainConfig
from cosmos.training.data import TrainLoader, read_shard_set
from cosmos.training.distributed import World, cuda_index, wrap_ddp
from cosmos.training.livelog import repair_live
from cosmos.training.loop import Trainer, config_fingerprint
from cosmos.training.optim import build_optimizer
from cosmos.training.preemption import STOP, stops_at_step_boundary
from cosmos.training.runtime import tune_malloc
from cosmos.training.validation import RetrievalCurve
from cosmos.training.precision import Precision

__all__ = ["build_trainer", "check_finished", "clear_stale_checkpoints", "launch_pretrain", "pick_device", "pretrain",
           "pretrain_job", "run_pretrain"]


def pick_device(name: str, world: World) -> torch.device:
    """``auto``: this rank's GPU (:func:`~cosmos.training.distributed.cuda_index`) if CUDA is available, else CPU."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("train.device=cuda but CUDA is not available: use train.device=auto or cpu")
        return torch.device("cuda", cuda_index(world.local_rank))
    return torch.device("cpu")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _schedules(optim: OptimConfig, switches: DistillSwitches, total: int) -> tuple[np.ndarray, np.ndarray]:
    if optim.warmup_steps >= total:
        raise ValueError(f"optim.warmup_steps={optim.warmup_steps} must be < the run's {total} steps "
                         "(train.epochs x batches per epoch)")
    lr = schedules.cosine_lr(optim.lr, optim.warmup_steps, total)
    if switches.momentum_schedule == "cosine":
        return lr, schedules.cosine_momentum(switches.momentum, total)
    return lr, schedules.constant(switches.momentum, total)


# Keys added after runs existed: they enter the hash only when set, so an older run's checkpoints still resume.
_SHAPING_SINCE = {"accum_steps": 1, "local_loss": False, "gather_with_grad": False}
# How a run executes, not what it computes (the same gradients, to round-off): free to change between restarts.
_EXECUTION = ("resume", "max_steps", "checkpoint_every", "keep_checkpoints", "log_every", "device", "val_every",
              "val_images", "val_root", "compile", "grad_checkpointing")


def run_fingerprint(*, seed: int, model: ModelConfig, optim: OptimConfig, train: TrainConfig,
                    switches: DistillSwitches) -> str:
    """The hash of what shapes the numbers; resume, logging, checkpoint cadence and execution switches
    (``train.compile``, ``model.grad_checkpointing``) may change between restarts."""
    def shaping_of(section: Any) -> dict[str, Any]:
        return {k: v for k, v in asdict(section).items()
                if k not in _EXECUTION and not (k in _SHAPING_SINCE and v == _SHAPING_SINCE[k])}

    shaping = {"seed": seed, "model": shaping_of(model), "optim": asdict(optim), "distill": asdict(switches),
               **shaping_of(train)}
    return config_fingerprint(shaping)


def build_trainer(*, out_dir: str | Path, shard_dir: str | Path, seed: int, model: ModelConfig, optim: OptimConfig,
                  train: TrainConfig, switches: DistillSwitches, world: World = World()) -> Trainer:
    """Everything of one run, resumed per ``train.resume``; ``out_dir`` holds its checkpoints."""
    device = pick_device(train.device, world)
    if train.tune_malloc:
        tune_malloc()
    precision = Precision(train.precision, device)
    _seed_everything(seed)
    student = build_student(model.name, switches, **model.speedups()).to(device)
    if model.grad_checkpointing:
        student.set_grad_checkpointing(True)
    teacher = EMATeacher(student) if switches.needs_teacher else None  # before DDP, as the reference
    if train.compile:
        compile_models(student, teacher)
    tokenizer = build_tokenizer(student.context_length)
    loader = TrainLoader(
        # uint8 crops, normalized on the device by batch_to (a quarter of the bytes; bit-identical on the CPU)
        read_shard_set(shard_dir, train.data_fraction), SampleTransform(switches, uint8=True),
        partial(collate, tokenizer=tokenizer), global_batch=train.batch_size, seed=seed, rank=world.rank,
        world_size=world.world_size, num_workers=train.num_workers, shuffle_buffer=train.shuffle_buffer,
        shuffle_initial=train.shuffle_initial, pin_memory=device.type == "cuda",
    )
    lr, momentum = _schedules(optim, switches, train.epochs * loader.batches_per_epoch)
    trainer = Trainer(
        student=wrap_ddp(student, world, device, find_unused_parameters=not _uses_every_parameter(switches)),
        teacher=teacher, objective=Objective(switches, gathering(train)).to(device),
        loader=loader, optimizer=build_optimizer(student, lr=optim.lr, weight_decay=optim.weight_decay,
                                                 betas=optim.betas, eps=optim.eps, fused=optim.fused),
        precision=precision, lr=lr, momentum=momentum, placement=switches.ema_placement, epochs=train.epochs,
        name=f"{switches.method}-{model.name}",
        checkpoints=CheckpointDir(out_dir, keep=train.keep_checkpoints) if world.is_main else None,
        checkpoint_every=train.checkpoint_every, max_steps=train.max_steps, log_every=train.log_every,
        fingerprint=run_fingerprint(seed=seed, model=model, optim=optim, train=train, switches=switches),
        accumulation=GradCache(train.accum_steps) if train.accum_steps > 1 else None,
    )
    if world.is_main:
        CheckpointDir(out_dir).sweep_debris()
    _resume(trainer, train.resume, CheckpointDir(out_dir))
    return trainer


def gathering(train: TrainConfig) -> Gathering:
    """OpenCLIP's scaling options from ``train.local_loss`` / ``train.gather_with_grad``."""
    return Gathering(local_loss=train.local_loss, with_grad=train.gather_with_grad)


def _uses_every_parameter(switches: DistillSwitches) -> bool:
    """Whether every student parameter reaches the loss (full COSMOS); else DDP must look for unused ones."""
    return switches.method == "cosmos" and switches.cross_attn and switches.image_distill and switches.text_distill


def _resume(trainer: Trainer, resume: str, folder: CheckpointDir) -> None:
    if resume == "none":
        return
    if resume == "auto":
        found = folder.load_latest(trainer.fingerprint, report=lambda line: print(f"pretrain: {line}", flush=True))
        if found is not None:
            trainer.load(found[1])
            print(f"pretrain: resumed from {found[0].name} at step {trainer.position.step}", flush=True)
        return
    trainer.load(load_checkpoint_file(resume))


def learning_curve(trainer: Trainer, train: TrainConfig) -> RetrievalCurve | None:
    """The run's :class:`~cosmos.training.validation.RetrievalCurve`, or None when ``train`` asks for none or
    its folder is absent (said in one line)."""
    if not train.val_every or not train.val_root:
        return None
    if not Path(train.val_root).is_dir():  # e.g. train=cpu on real data: the curve is a diagnostic, not an output
        print(f"pretrain: no learning curve: train.val_root={train.val_root} does not exist (point it at a "
              "COCO-layout retrieval set, or set train.val_every=0 to silence this)", flush=True)
        return None
    student = trainer.student.module if hasattr(trainer.student, "module") else trainer.student
    size = student.visual.image_size
    return RetrievalCurve(train.val_root, train.val_images, int(size[0] if isinstance(size, (tuple, list)) else size),
                          build_tokenizer(student.context_length))


def pretrain(trainer: Trainer, live_dir: str | Path | None = None, show_progress: bool = True,
             curve: RetrievalCurve | None = None, val_every: int = 0) -> dict[str, Any]:
    """Train ``trainer`` to the end with a tqdm bar and dvclive metrics; return the summary metrics.

    With a ``curve``, every ``val_every`` steps and at the last step its R@1 values are logged as
    ``val/<weights>_*`` (the learning curves of the report); the summary carries the last of them.
    """
    from tqdm import tqdm

    last: dict[str, float] = {}
    live = None
    if live_dir is not None:
        from dvclive import Live
        if trainer.position.step > 0:
            repaired = repair_live(live_dir, trainer.position.step)
            if repaired:
                print(f"pretrain: dvclive log brought back to step {trainer.position.step}: {'; '.join(repaired)}",
                      flush=True)
        live = Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, resume=trainer.position.step > 0)
    bar = tqdm(total=trainer.total_steps, initial=trainer.position.step, unit="step", disable=not show_progress,
               dynamic_ncols=True)

    def log(step: int, metrics: dict[str, float]) -> None:
        last.update(metrics)
        bar.set_postfix(loss=f"{metrics['loss']:.3f}", samples_s=f"{metrics['samples_per_s']:.0f}")
        if live is not None:
            live.step = step
            for key, value in metrics.items():
                live.log_metric(f"train/{key}", value)
            live.next_step()

    def on_step(n: int) -> None:
        bar.update(n)
        step = trainer.position.step
        if curve is None or not (step % val_every == 0 or step == trainer.total_steps):
            return
        models = {"student": trainer.student}
        if trainer.teacher is not None:
            models["teacher"] = trainer.teacher.module
        values = curve(models)
        last.update({f"val/{k}": v for k, v in values.items()})
        if live is not None:
            live.step = step
            for key, value in values.items():
                live.log_metric(f"val/{key}", value)

    trainer.log, trainer.progress = log, on_step
    start, first_step = time.perf_counter(), trainer.position.step
    try:
        position = trainer.fit()
    finally:  # ends the bar's line, so an error message starts on its own
        bar.close()
    if live is not None:
        live.end()
    seconds = time.perf_counter() - start
    steps = position.step - first_step
    return {
        "steps": position.step, "epochs_completed": position.epoch, "finished": position.step == trainer.total_steps,
        "preempted": trainer.stopped,
        "final": {k: v for k, v in last.items() if k != "samples_per_s" and not k.startswith("val/")},
        "curve": {k[4:]: v for k, v in last.items() if k.startswith("val/")},
        "samples_per_s": steps * trainer.loader.batch * trainer.loader.world / seconds if steps else None,
        "seconds": round(seconds, 2), "bad_samples": sum(trainer.bad_samples.values()),
    }


def parse_sections(params: dict[str, Any]) -> dict[str, Any]:
    """Typed, validated ``model``/``optim``/``train``/``launcher``/``distill`` sections; raises naming the key."""
    from cosmos.training.config import LauncherConfig, typed_section, validate_train

    sections = {
        "model": typed_section(ModelConfig, params.get("model"), "model"),
        "optim": typed_section(OptimConfig, params.get("optim"), "optim"),
        "train": typed_section(TrainConfig, params.get("train"), "train"),
        "launcher": typed_section(LauncherConfig, params.get("launcher"), "launcher"),
        "switches": DistillSwitches.from_params(params.get("distill") or {}),
    }
    validate_train(sections["train"], sections["optim"], sections["launcher"])
    if not isinstance(params.get("seed"), int) or isinstance(params.get("seed"), bool):
        raise ValueError(f"seed={params.get('seed')!r} must be an integer")
    return sections


@stops_at_step_boundary
def run_pretrain(params: dict[str, Any], out_dir: str, live_dir: str, shard_dir: str) -> dict[str, Any]:
    """The whole training job (in-process, under ``torchrun``, or inside a submitit task): the summary on rank 0.

    One writer: whatever the launch, only rank 0 clears stale checkpoints (:func:`clear_stale_checkpoints`,
    before the others look for one to resume from: a barrier separates the two), saves checkpoints, logs and
    writes ``run_info.json``. Other ranks return ``{"rank": R, "steps", "finished", "preempted"}``; the stage
    scripts write nothing where :func:`cosmos.training.distributed.process_rank` is not 0.
    """
    from cosmos.io.provenance import write_run_info
    from cosmos.training.distributed import barrier, check_gpus, init_distributed

    sections = parse_sections(params)
    train, launcher = sections["train"], sections["launcher"]
    if launcher.name == "slurm":  # GPUs asked for but not usable: fail now, not after training on the CPU
        check_gpus(launcher.gpus_per_node, int(os.environ.get("LOCAL_RANK", "0")))
    world = init_distributed(pick_device(train.device, World()))
    if world.is_main and train.resume == "auto":
        clear_stale_checkpoints(params, sections, out_dir)
    barrier(world)
    trainer = build_trainer(out_dir=out_dir, shard_dir=shard_dir, seed=params["seed"], model=sections["model"],
                            optim=sections["optim"], train=train, switches=sections["switches"], world=world)
    trainer.should_stop = partial(STOP.requested, world.world_size)
    curve = learning_curve(trainer, train) if world.is_main else None
    summary = pretrain(trainer, live_dir=live_dir if world.is_main else None, show_progress=world.is_main,
                       curve=curve, val_every=train.val_every)
    if not world.is_main:
        return {"rank": world.rank, **{k: summary[k] for k in ("steps", "finished", "preempted")}}
    if summary["finished"]:
        summary["checkpoint"] = CheckpointDir(out_dir).finalize().name
    config = {k: params[k] for k in ("seed", "model", "optim", "train", "launcher", "distill")}
    write_run_info(out_dir, "pretrain", config, params["seed"])
    return summary


def clear_stale_checkpoints(params: dict[str, Any], sections: dict[str, Any], out_dir: str | Path) -> list[str]:
    """Clear ``out_dir`` of everything but the unfinished checkpoints of this very config (``train.resume=auto``).

    The stages' checkpoint outs are ``persist: true`` in dvc.yaml, so a killed ``dvc repro`` (or a requeued
    job) resumes exactly, while a changed config or code trains anew (:meth:`CheckpointDir.discard_stale`).
    """
    fingerprint = run_fingerprint(seed=params["seed"], model=sections["model"], optim=sections["optim"],
                                  train=sections["train"], switches=sections["switches"])
    gone = CheckpointDir(out_dir).discard_stale(fingerprint)
    if gone:
        print(f"pretrain: removed stale {', '.join(gone)} from {out_dir} (another config, a finished run, or an "
              "interrupted write)", flush=True)
    return gone


def pretrain_job(params: dict[str, Any], out: str | Path, shard_dir: str | Path) -> dict[str, Any]:
    """Validate ``params`` and return the keyword arguments of :func:`run_pretrain` into ``out``/{checkpoints,live}.

    Paths are made absolute because queued experiments and submitit jobs run in other folders. Raises on a
    bad config before any work is queued.
    """
    parse_sections(params)
    out = Path(out)
    return {"params": params, "out_dir": str((out / "checkpoints").resolve()),
            "live_dir": str((out / "live").resolve()), "shard_dir": str(Path(shard_dir).resolve())}


def check_finished(summary: dict[str, Any]) -> dict[str, Any]:
    """``summary`` if the run reached its last step; raises otherwise, so a stage never records partial outputs."""
    if not summary["finished"]:
        raise RuntimeError(f"training stopped at step {summary['steps']} (train.max_steps); outputs are partial")
    return summary


def launch_pretrain(params: dict[str, Any], out: str | Path, shard_dir: str | Path) -> dict[str, Any]:
    """Run :func:`run_pretrain` with the configured launcher into ``out``/{checkpoints,live,submitit}.

    Stale checkpoints are cleared by rank 0 inside the run (:func:`clear_stale_checkpoints`), so a
    requeued job and every launch path clear them the same way. Raises when the run stopped early
    (``train.max_steps``).
    """
    from cosmos.training.launch import launch

    kwargs = pretrain_job(params, out, shard_dir)
    launcher = parse_sections(params)["launcher"]
    return check_finished(launch(run_pretrain, kwargs, launcher, Path(out) / "submitit"))
