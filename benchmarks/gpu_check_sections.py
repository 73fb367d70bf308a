"""The sections of ``benchmarks/gpu_check.py``: one function per check, ``(Ctx) -> result dict`` (or :class:`Skip`).

A result dict has ``passed`` (bool), ``criterion`` (the stated tolerance), ``summary`` (one Markdown line),
``numbers`` (what was measured) and optionally ``rows`` (a table). Everything is built through the library:
trainers with :func:`cosmos.training.pretrain.build_trainer` (the production path: seeding, device placement,
EMA teacher, objective, loader, fused AdamW, gradient caching), FLOPs with ``side_by_side.flop_counter`` and the
synthetic ViT batches and matmul peak of ``train_step.py``.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
REPO_ROOT = BENCH.parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))
import side_by_side  # noqa: E402  (flop_counter: FlopCounterMode that also counts CPU flash attention)
import train_step  # noqa: E402  (switches_for, synthetic_batch, matmul_peak)

METHODS = ("clip", "silc", "cosmos")

# bf16 dense tensor-core peaks (TFLOP/s, without sparsity) from NVIDIA's data sheets, matched as substrings of
# torch.cuda.get_device_name(); the first match wins, so the specific names come first.
BF16_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H200 NVL", 835.0), ("GH200", 989.4), ("H200", 989.4),
    ("H100", 989.4),  # SXM5 ("NVIDIA H100 80GB HBM3")
    ("A100", 312.0),  # SXM4 and PCIe
)


class Skip(Exception):
    """The section does not apply here; the message is the stated reason."""


@dataclass(frozen=True)
class Profile:
    """Sizes of one mode: ``full`` (one GPU, real ViT-B/16) or ``reduced`` (CPU test-suite mode)."""

    name: str
    check_model: str            # model of the correctness sections
    crops: tuple[int, int]      # global / local crop size
    check_batch: int
    lr: float                   # constant lr of the correctness sections
    learn_steps: int
    accum_steps: int
    speed_model: str            # model of throughput, loader and evaluation
    speed_batches: tuple[int, ...]
    warmup: int
    timed: int
    image_size: int             # synthetic images (data.generator.image_size)
    check_samples: int
    loader_samples: int
    loader_batch: int
    loader_workers: int
    loader_epochs: int
    eval_images: int
    eval_batch: int
    matmul_n: int               # size of the measured matmul peak (devices without a table entry)
    sbs_batch: int              # side_by_side.py's batch (full: ViT-B/16 on the GPU; reduced: its CPU model)


FULL = Profile("full", check_model="ViT-B-16", crops=(224, 96), check_batch=16, lr=2e-4, learn_steps=20,
               accum_steps=4, speed_model="ViT-B-16", speed_batches=(64, 128, 256), warmup=2, timed=5,
               image_size=224, check_samples=64, loader_samples=1024, loader_batch=64, loader_workers=8,
               loader_epochs=2, eval_images=256, eval_batch=64, matmul_n=8192, sbs_batch=128)
REDUCED = Profile("reduced", check_model="cosmos-tiny", crops=(32, 16), check_batch=4, lr=1e-3, learn_steps=20,
                  accum_steps=2, speed_model="cosmos-tiny", speed_batches=(4, 8), warmup=1, timed=2,
                  image_size=64, check_samples=32, loader_samples=48, loader_batch=4, loader_workers=2,
                  loader_epochs=2, eval_images=16, eval_batch=8, matmul_n=1024, sbs_batch=8)


@dataclass
class Ctx:
    """What every section sees: the device, the profile, scratch space, data, earlier sections' results."""

    device: torch.device
    prof: Profile
    work: Path
    check_shards: Path
    data: Any                    # gpu_check.BackgroundData: loader shards and eval images, written in a child
    deadline: float              # time.perf_counter() value by which the run must end
    reference_src: Path | None = None
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    _outs: int = 0

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def train_precision(self) -> str:
        return "bf16"  # params.yaml train.precision; autocast on CPU and GPU alike

    def remaining(self) -> float:
        return self.deadline - time.perf_counter()

    def out_dir(self, label: str) -> Path:
        self._outs += 1
        return self.work / f"{self._outs:02d}-{label}"


# ----------------------------------------------------------------------------------------------- helpers


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def switches(method: str, prof: Profile):
    """The method's ``conf/distill`` switches at the profile's crops; reduced: 2 local crops, 4 captions, a small
    DINO head (as tests/training/test_ddp_parity.py shrinks them)."""
    import dataclasses

    s = train_step.switches_for(method)
    changes: dict[str, Any] = {"global_crop_size": prof.crops[0], "local_crop_size": prof.crops[1]}
    if prof.name == "reduced":
        if s.multi_crop:
            changes["local_crops"] = 2
        if s.text_crop:
            changes["num_captions"] = 4
        if s.method == "silc":
            changes["silc"] = dataclasses.replace(s.silc, out_dim=256, hidden_dim=64, bottleneck_dim=32)
    return s.replace(**changes)


def build(ctx: Ctx, method: str = "cosmos", *, label: str, model: str | None = None, batch: int | None = None,
          precision: str = "fp32", accum: int = 1, workers: int = 0, resume: str = "none", out: Path | None = None,
          grad_ckpt: bool = False, shards: Path | None = None):
    """A :class:`~cosmos.training.loop.Trainer` from :func:`build_trainer` on ``ctx.device`` (seed 0)."""
    from cosmos.training.config import ModelConfig, OptimConfig, TrainConfig
    from cosmos.training.pretrain import build_trainer

    train = TrainConfig(batch_size=batch or ctx.prof.check_batch, epochs=1, num_workers=workers, precision=precision,
                        data_fraction=1.0, shuffle_buffer=64, shuffle_initial=8, checkpoint_every=0,
                        keep_checkpoints=2, log_every=1, resume=resume, max_steps=0, device=ctx.device.type,
                        accum_steps=accum)
    optim = OptimConfig(lr=ctx.prof.lr, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.1, warmup_steps=0)
    return build_trainer(out_dir=out or ctx.out_dir(label), shard_dir=shards or ctx.check_shards, seed=0,
                         model=ModelConfig(model or ctx.prof.check_model, grad_checkpointing=grad_ckpt),
                         optim=optim, train=train, switches=switches(method, ctx.prof))


def loader_batch(trainer) -> dict[str, Any]:
    """The trainer's first loader batch (host tensors), as tests/training/test_loop.py takes it."""
    batch = next(iter(trainer.loader.epoch(0)))
    batch.pop("worker"), batch.pop("bad_samples")
    return batch


def bare(model):
    return getattr(model, "module", model)


def weights(trainer) -> dict[str, torch.Tensor]:
    out = {f"student.{k}": v.detach().clone() for k, v in bare(trainer.student).state_dict().items()}
    if trainer.teacher is not None:
        out.update({f"teacher.{k}": v.detach().clone() for k, v in trainer.teacher.state_dict().items()})
    out.update({f"objective.{k}": v.detach().clone() for k, v in trainer.objective.state_dict().items()})
    return out


def compare_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], small: float) -> dict[str, Any]:
    """Bit-identity, the largest difference, and how many float entries differ by more than ``small``."""
    if a.keys() != b.keys():
        raise RuntimeError(f"different tensors: {sorted(a.keys() ^ b.keys())[:5]}")
    floats = [k for k in a if a[k].is_floating_point()]
    identical = all(torch.equal(a[k], b[k]) for k in a)
    diffs = {k: (a[k].float() - b[k].float()).abs() for k in floats}
    worst = max(floats, key=lambda k: float(diffs[k].max()) if diffs[k].numel() else 0.0)
    far = sum(int((d > small).sum()) for d in diffs.values())
    total = sum(d.numel() for d in diffs.values())
    return {"bit_identical": identical, "max_abs_diff": float(diffs[worst].max()), "worst_tensor": worst,
            "entries_beyond": far, "entries": total, "beyond_threshold": small}


def same_step(loss_a: float, loss_b: float, w: dict[str, Any], cuda: bool, lr: float) -> tuple[bool, str]:
    """CPU: bit-identical weights and equal losses. CUDA (atomics in some backward kernels are not deterministic):
    losses to 1e-5 relative, weights at most 2.5 lr apart (one Adam step) with under 0.1% of entries beyond lr/100."""
    if not cuda:
        return w["bit_identical"] and loss_a == loss_b, "bit-identical weights and losses (CPU)"
    ok = (abs(loss_a - loss_b) <= 1e-5 * abs(loss_a) and w["max_abs_diff"] <= 2.5 * lr
          and w["entries_beyond"] <= 1e-3 * w["entries"])
    return ok, (f"loss within 1e-5 relative; weights within 2.5 lr = {2.5 * lr:g}, under 0.1% of entries beyond "
                f"lr/100 = {lr / 100:g} (CUDA backward kernels with atomics are not bit-reproducible)")


def tensors_off_device(trainer, device: torch.device) -> tuple[int, list[str], list[str]]:
    """Count every parameter, buffer and optimizer state tensor; name those not on ``device``.

    Returns ``(count, misplaced, host_steps)``: ``host_steps`` are AdamW's 0-dim ``step`` counters on the host,
    which torch keeps there by design for the non-fused, non-capturable optimizer (no sync per step).
    """
    named: list[tuple[str, torch.Tensor]] = []
    student = bare(trainer.student)
    named += [(f"student.{n}", t) for n, t in [*student.named_parameters(), *student.named_buffers()]]
    if trainer.teacher is not None:
        module = trainer.teacher.module
        named += [(f"teacher.{n}", t) for n, t in [*module.named_parameters(), *module.named_buffers()]]
    named += [(f"objective.{n}", t) for n, t in [*trainer.objective.named_parameters(),
                                                  *trainer.objective.named_buffers()]]
    names = {id(p): n for n, p in student.named_parameters()}
    for param, state in trainer.optimizer.state.items():
        for key, value in state.items():
            if torch.is_tensor(value):
                named.append((f"optimizer[{names.get(id(param), '?')}].{key}", value))

    def on(t: torch.Tensor) -> bool:
        return t.device.type == device.type and (device.index is None or t.device.index == device.index)

    host_steps = [n for n, t in named if not on(t) and n.endswith(".step") and t.ndim == 0 and n.startswith("opt")]
    misplaced = [n for n, t in named if not on(t) and n not in host_steps]
    return len(named), misplaced, host_steps


def stop_workers(loader) -> None:
    """Shut the persistent DataLoader workers down now. They ignore SIGTERM (``ignore_job_signals``), so workers
    left to interpreter exit make multiprocessing's exit handler wait for them forever."""
    iterator = getattr(getattr(loader, "_loader", None), "_iterator", None)
    if iterator is not None:
        iterator._shutdown_workers()


def device_peak(ctx: Ctx) -> tuple[float, str]:
    """bf16 dense peak in TFLOP/s: the data-sheet table for known GPUs, else a measured ``torch.mm``."""
    if ctx.cuda:
        name = torch.cuda.get_device_name(ctx.device)
        for key, tflops in BF16_PEAK_TFLOPS:
            if key in name:
                return tflops, f"data sheet: {key} bf16 dense {tflops:g} TFLOP/s"
    n = ctx.prof.matmul_n
    measured = train_step.matmul_peak(ctx.device, torch.bfloat16, n=n) / 1e3
    return measured, f"measured: best {n}^3 bf16 torch.mm on this device ({measured:.3g} TFLOP/s)"


def _fmt(x: float) -> str:
    return f"{x:.3g}"


# ---------------------------------------------------------------------------------------------- sections


def placement(ctx: Ctx) -> dict[str, Any]:
    rows = []
    for method in ("cosmos", "silc"):  # silc: the DINO centre buffer; cosmos: teacher + cross-attention
        trainer = build(ctx, method, label=f"placement-{method}", precision=ctx.train_precision)
        trainer.train_step(loader_batch(trainer))  # creates the optimizer state
        count, misplaced, host_steps = tensors_off_device(trainer, ctx.device)
        rows.append({"method": method, "tensors": count, "off_device": len(misplaced),
                     "examples": ", ".join(misplaced[:3]) or "-", "host_step_counters": len(host_steps)})
        del trainer
    passed = all(r["off_device"] == 0 and r["tensors"] > 0 for r in rows)
    return {"passed": passed, "rows": rows,
            "criterion": "every parameter, buffer and optimizer state tensor (after one step) of student, EMA "
                         "teacher and objective on the device (AdamW's 0-dim host step counters are allowed)",
            "summary": "; ".join(f"{r['method']}: {r['tensors'] - r['off_device']}/{r['tensors']} on device"
                                 for r in rows)}


RTOL_PRECISION, ATOL_PRECISION = 2e-2, 1e-3


def precision(ctx: Ctx) -> dict[str, Any]:
    from cosmos.training.data import batch_to
    from cosmos.training.precision import Precision

    names = ["fp32", "bf16"] + (["fp16"] if ctx.cuda else [])
    trainer = build(ctx, "cosmos", label="precision")
    batch = batch_to(loader_batch(trainer), ctx.device)
    state = {k: v.clone() for k, v in trainer.objective.state_dict().items()}
    losses = {}
    for name in names:
        trainer.objective.load_state_dict(state)
        with torch.no_grad(), Precision(name, ctx.device).autocast():
            terms = trainer.objective(trainer.student, trainer.teacher, batch, 0)
        losses[name] = {**{k: float(v) for k, v in terms.items()}, "loss": float(sum(terms.values()))}
    rows, passed = [], True
    for name in names:
        for term, value in losses[name].items():
            ref = losses["fp32"][term]
            ok = math.isfinite(value) and abs(value - ref) <= RTOL_PRECISION * abs(ref) + ATOL_PRECISION
            passed &= ok
            rows.append({"precision": name, "term": term, "value": value, "fp32": ref,
                         "rel_diff": abs(value - ref) / max(abs(ref), 1e-12), "ok": ok})
    worst = max((r for r in rows if r["precision"] != "fp32"), key=lambda r: r["rel_diff"])
    note = "" if ctx.cuda else " (fp16 needs CUDA's GradScaler: not run on CPU)"
    return {"passed": passed, "rows": rows, "numbers": losses,
            "criterion": f"every step-0 loss term within {RTOL_PRECISION:g} relative + {ATOL_PRECISION:g} absolute "
                         "of fp32",
            "summary": f"{', '.join(names)}{note}; worst {worst['precision']} {worst['term']} rel. diff "
                       f"{worst['rel_diff']:.2e}"}


def learning(ctx: Ctx) -> dict[str, Any]:
    trainer = build(ctx, "cosmos", label="learning", precision=ctx.train_precision)
    trainer.lr = np.full_like(trainer.lr, ctx.prof.lr)
    batch = loader_batch(trainer)
    start = time.perf_counter()
    losses = [trainer.train_step(batch)["loss"] for _ in range(ctx.prof.learn_steps)]
    seconds = (time.perf_counter() - start) / len(losses)
    passed = all(map(math.isfinite, losses)) and losses[-1] < 0.8 * losses[0]
    return {"passed": passed, "numbers": {"losses": losses, "s_per_step": seconds, "lr": ctx.prof.lr,
                                          "precision": ctx.train_precision},
            "criterion": f"{len(losses)} {ctx.train_precision} steps on one repeated batch: last loss < 0.8 x first",
            "summary": f"loss {losses[0]:.3f} -> {losses[-1]:.3f} ({losses[-1] / losses[0]:.2f}x) over "
                       f"{len(losses)} steps, {seconds:.3f} s/step ({ctx.prof.check_model}, "
                       f"batch {ctx.prof.check_batch})"}


def gradscaler(ctx: Ctx) -> dict[str, Any]:
    if not ctx.cuda:
        raise Skip("fp16 with a GradScaler needs CUDA (cosmos.training.precision refuses fp16 on CPU)")
    trainer = build(ctx, "cosmos", label="gradscaler", precision="fp16")
    trainer.lr = np.full_like(trainer.lr, ctx.prof.lr)
    batch = loader_batch(trainer)
    scaler = trainer.precision.scaler
    scales, losses = [scaler.get_scale()], []
    for _ in range(ctx.prof.learn_steps):
        losses.append(trainer.train_step(batch)["loss"])
        scales.append(scaler.get_scale())
    skipped = sum(b < a for a, b in zip(scales, scales[1:]))  # the scaler backs off exactly on a skipped step
    finite = all(map(math.isfinite, scales))
    passed = finite and min(scales[1:]) > 1 and skipped <= 3
    return {"passed": passed, "numbers": {"scales": scales, "losses": losses, "skipped_steps": skipped},
            "criterion": f"fp16 over {len(losses)} steps: scale finite and > 1 throughout, at most 3 skipped steps",
            "summary": f"scale {scales[0]:g} -> {scales[-1]:g} (min {min(scales):g}, max {max(scales):g}), "
                       f"{skipped} skipped; loss {losses[0]:.3f} -> {losses[-1]:.3f}"}


def _time_batch(ctx: Ctx, trainer, batch: int, ckpt: bool) -> dict[str, Any]:
    """Warm-up, one FLOP-counted step, ``timed`` steps (synced) at ``batch``; "OOM" if it does not fit."""
    from cosmos.training.data import batch_to

    row: dict[str, Any] = {"grad_checkpointing": ckpt, "batch": batch}
    oom = False
    try:
        sw = trainer.objective.switches
        data = batch_to(train_step.synthetic_batch(sw, batch, bare(trainer.student).context_length,
                                                   torch.device("cpu")), ctx.device)
        if ctx.cuda:
            torch.cuda.reset_peak_memory_stats(ctx.device)
        for _ in range(ctx.prof.warmup):
            trainer.step_on_device(data)
        trainer.check_steps()
        with side_by_side.flop_counter() as counter:
            trainer.step_on_device(data)
            trainer.check_steps()
        sync(ctx.device)
        start = time.perf_counter()
        for _ in range(ctx.prof.timed):
            trainer.step_on_device(data)
        trainer.check_steps()
        sync(ctx.device)
        seconds = (time.perf_counter() - start) / ctx.prof.timed
        peak = (torch.cuda.max_memory_allocated(ctx.device) / 2**30 if ctx.cuda else None)
        row.update(status="ok", s_per_step=seconds, samples_per_s=batch / seconds,
                   counted_tflop=counter.get_total_flops() / 1e12, peak_mem_gib=peak)
    except torch.cuda.OutOfMemoryError:
        oom = True
    if oom:  # outside the except block: the traceback's frames (and their activations) are gone by now
        data = None
        trainer.optimizer.zero_grad(set_to_none=True)
        with contextlib.suppress(Exception):
            trainer.check_steps()
        free_memory(ctx.device)
        row.update(status="OOM")
    return row


def throughput(ctx: Ctx) -> dict[str, Any]:
    prof = ctx.prof
    peak_tflops, peak_source = device_peak(ctx)
    rows: list[dict[str, Any]] = []
    per_row_s = 20.0 if ctx.cuda else 5.0
    # At most twice the section's estimate, so that the sections after it keep their share of the budget.
    section_end = time.perf_counter() + 2 * ESTIMATE_S["throughput"][prof.name == "reduced"]
    for ckpt in (False, True):
        trainer = build(ctx, "cosmos", label=f"throughput-ckpt{int(ckpt)}", model=prof.speed_model,
                        batch=prof.speed_batches[0], precision=ctx.train_precision, grad_ckpt=ckpt)
        stop = None
        for b in prof.speed_batches:
            if stop is not None:
                rows.append({"grad_checkpointing": ckpt, "batch": b, "status": stop})
                continue
            if min(ctx.remaining(), section_end - time.perf_counter()) < per_row_s:
                rows.append({"grad_checkpointing": ckpt, "batch": b, "status": "skipped (time budget)"})
                continue
            row = _time_batch(ctx, trainer, b, ckpt)
            rows.append(row)
            if row["status"] == "OOM":
                stop = "not run (a smaller batch was OOM)"
        del trainer
        free_memory(ctx.device)
    # MFU counts the model's FLOPs: the step without checkpointing (its recompute is not model work).
    per_sample = {r["batch"]: r["counted_tflop"] / r["batch"] for r in rows
                  if r.get("status") == "ok" and not r["grad_checkpointing"]}
    fallback = next(iter(per_sample.values()), None)
    for r in rows:
        if r.get("status") != "ok":
            continue
        if not r["grad_checkpointing"]:
            model_tflop = r["counted_tflop"]
        elif fallback is not None:  # the same batch without checkpointing, else scaled per sample
            model_tflop = per_sample.get(r["batch"], fallback) * r["batch"]
        else:  # no row without checkpointing ran: the count includes the recompute (an upper bound)
            model_tflop = r["counted_tflop"]
        r["model_tflop"] = model_tflop
        r["mfu"] = model_tflop / r["s_per_step"] / peak_tflops
    ok = [r for r in rows if r.get("status") == "ok"]
    best = max(ok, key=lambda r: r["samples_per_s"]) if ok else None
    summary = (f"best {best['samples_per_s']:.1f} samples/s at batch {best['batch']} "
               f"(checkpointing {'on' if best['grad_checkpointing'] else 'off'}, MFU {100 * best['mfu']:.1f}%); "
               f"largest batch without / with checkpointing: "
               f"{max((r['batch'] for r in ok if not r['grad_checkpointing']), default='none')} / "
               f"{max((r['batch'] for r in ok if r['grad_checkpointing']), default='none')}") if best else "no row ran"
    sw = switches("cosmos", prof)
    expected = ("ok", "OOM", "not run", "skipped")
    return {"passed": bool(ok) and all(r["status"].startswith(expected) for r in rows),
            "rows": rows, "criterion": "at least one batch runs; every batch either runs or is out of memory",
            "numbers": {"model": prof.speed_model, "precision": ctx.train_precision, "peak_tflops": peak_tflops,
                        "peak_source": peak_source, "views": f"{sw.num_image_views} crops ({sw.global_crop_size}/"
                        f"{sw.local_crop_size} px), {sw.num_captions} captions", "warmup_steps": prof.warmup,
                        "timed_steps": prof.timed,
                        "flops": "torch FlopCounterMode over one whole step (matmul, conv, attention); MFU = the "
                                 "step without checkpointing's count / s per step / peak"},
            "summary": summary}


@contextlib.contextmanager
def one_rank_group(device: torch.device):
    """A 1-rank process group in this process (NCCL on CUDA, gloo on CPU), destroyed after; env restored."""
    import torch.distributed as dist

    keys = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")
    saved = {k: os.environ.get(k) for k in keys}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend, init_method="env://", rank=0, world_size=1)
        try:
            yield backend
        finally:
            dist.destroy_process_group()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def ddp(ctx: Ctx) -> dict[str, Any]:
    from torch.nn.parallel import DistributedDataParallel

    from cosmos.training.pretrain import _uses_every_parameter

    rows = []
    for method in METHODS:
        plain = build(ctx, method, label=f"ddp-{method}-plain")
        batch = loader_batch(plain)
        want = plain.train_step(batch)["loss"]
        expected = weights(plain)
        del plain
        with one_rank_group(ctx.device) as backend:
            trainer = build(ctx, method, label=f"ddp-{method}")
            ids = [ctx.device.index] if ctx.cuda else None
            trainer.student = DistributedDataParallel(
                trainer.student, device_ids=ids,
                find_unused_parameters=not _uses_every_parameter(trainer.objective.switches))
            got = trainer.train_step(batch)["loss"]
            actual = weights(trainer)
            del trainer
        w = compare_weights(expected, actual, ctx.prof.lr / 100)
        ok, criterion = same_step(want, got, w, ctx.cuda, ctx.prof.lr)
        rows.append({"method": method, "backend": backend, "loss_plain": want, "loss_ddp": got,
                     "bit_identical": w["bit_identical"], "max_abs_weight_diff": w["max_abs_diff"], "ok": ok})
        free_memory(ctx.device)
    return {"passed": all(r["ok"] for r in rows), "rows": rows,
            "criterion": f"one fp32 step of a 1-rank DDP-wrapped trainer equals the plain trainer's: {criterion}",
            "summary": "; ".join(f"{r['method']} ({r['backend']}): " + (
                "identical" if r["bit_identical"] else "max diff " + _fmt(r["max_abs_weight_diff"])) for r in rows)}


def checkpoint(ctx: Ctx) -> dict[str, Any]:
    folder = ctx.out_dir("checkpoint")
    first = build(ctx, "cosmos", label="checkpoint", out=folder, precision=ctx.train_precision)
    batches = []
    for batch in first.loader.epoch(0):
        batch.pop("worker"), batch.pop("bad_samples")
        batches.append(batch)
        if len(batches) == 2:
            break
    first.train_step(batches[0])
    first.position.step += 1
    first.save()  # step-00000001.pt
    continued = first.train_step(batches[1])["loss"]
    expected = weights(first)
    del first
    free_memory(ctx.device)
    resumed = build(ctx, "cosmos", label="checkpoint", out=folder, precision=ctx.train_precision, resume="auto")
    if resumed.position.step != 1:
        raise RuntimeError(f"resume found step {resumed.position.step}, expected 1")
    count, misplaced, _ = tensors_off_device(resumed, ctx.device)
    got = resumed.train_step(batches[1])["loss"]
    w = compare_weights(expected, weights(resumed), ctx.prof.lr / 100)
    ok, criterion = same_step(continued, got, w, ctx.cuda, ctx.prof.lr)
    passed = ok and not misplaced
    return {"passed": passed, "numbers": {"loss_continued": continued, "loss_resumed": got, **w,
                                          "resumed_tensors_off_device": misplaced[:5]},
            "criterion": f"save at step 1, resume in a new trainer, step 2 equals continuing ({criterion}); "
                         "every resumed tensor on the device",
            "summary": f"step-2 loss {continued:.6f} continued / {got:.6f} resumed; weights "
                       f"{'bit-identical' if w['bit_identical'] else 'max diff ' + _fmt(w['max_abs_diff'])}; "
                       f"{count - len(misplaced)}/{count} resumed tensors on device"}


def accumulation(ctx: Ctx) -> dict[str, Any]:
    from cosmos.eval.device import full_fp32

    n = ctx.prof.accum_steps
    tol = 1e-4 if ctx.cuda else 1e-5
    steps = {}
    with full_fp32():  # TF32 off: fp32 means fp32 on the GPU too
        for accum in (1, n):
            trainer = build(ctx, "cosmos", label=f"accum{accum}", accum=accum)
            batch = loader_batch(trainer)
            losses = trainer.train_step(batch)
            grads = {k: p.grad.detach().clone() for k, p in bare(trainer.student).named_parameters()
                     if p.grad is not None}
            steps[accum] = (losses, grads)
            del trainer
            free_memory(ctx.device)
    (want, g_full), (got, g_acc) = steps[1], steps[n]
    if g_full.keys() != g_acc.keys():
        raise RuntimeError(f"different parameters with a gradient: {sorted(g_full.keys() ^ g_acc.keys())[:5]}")
    loss_diff = max(abs(got[k] - want[k]) / max(abs(want[k]), 1e-12) for k in want)
    ratios = {k: float((g_acc[k] - g).abs().max()) / (float(g.abs().max()) + 1e-30) for k, g in g_full.items()}
    worst = max(ratios, key=ratios.get)
    passed = loss_diff <= 1e-5 and ratios[worst] <= tol
    return {"passed": passed,
            "numbers": {"accum_steps": n, "batch": ctx.prof.check_batch, "loss_full": want, "loss_accum": got,
                        "loss_rel_diff": loss_diff, "worst_grad_rel_diff": ratios[worst], "worst_param": worst},
            "criterion": f"fp32 (TF32 off), GradCache with {n} micro-batches vs the full batch: loss terms within "
                         f"1e-5 relative, every gradient tensor within {tol:g} of its largest entry",
            "summary": f"{n} x {ctx.prof.check_batch // n} vs {ctx.prof.check_batch}: loss rel. diff {loss_diff:.1e}, "
                       f"worst gradient {ratios[worst]:.1e} of its max ({worst})"}


def loader(ctx: Ctx) -> dict[str, Any]:
    prof = ctx.prof
    shards = ctx.data.wait_shards()
    trainer = build(ctx, "cosmos", label="loader", model=prof.speed_model, batch=prof.loader_batch,
                    workers=prof.loader_workers, shards=shards, precision=ctx.train_precision)
    epochs, bad, sizes = [], 0, set()
    for epoch in range(prof.loader_epochs):
        start, count = time.perf_counter(), 0
        for batch in trainer.loader.epoch(epoch):
            count += 1
            bad = max(bad, int(batch["bad_samples"]))
            sizes.add(batch["images"][0].shape[0])
        epochs.append({"epoch": epoch, "batches": count, "seconds": time.perf_counter() - start})
    stop_workers(trainer.loader)
    del trainer
    steady = epochs[1:] or epochs  # epoch 0 includes forking the workers
    batches_per_s = sum(e["batches"] for e in steady) / sum(e["seconds"] for e in steady)
    loader_sps = batches_per_s * prof.loader_batch
    step = next((r for r in ctx.results.get("throughput", {}).get("rows", [])
                 if r.get("status") == "ok" and r["batch"] == prof.loader_batch and not r["grad_checkpointing"]), None)
    numbers = {"workers": prof.loader_workers, "batch": prof.loader_batch, "image_size": ctx.data.image_size,
               "samples": ctx.data.samples, "epochs": epochs, "batches_per_s": batches_per_s,
               "samples_per_s": loader_sps, "bad_samples": bad}
    versus = "no throughput row at this batch to compare with"
    if step is not None:
        numbers["train_samples_per_s"] = step["samples_per_s"]
        numbers["loader_over_train"] = loader_sps / step["samples_per_s"]
        verdict = "keeps up" if numbers["loader_over_train"] >= 1 else "is the bottleneck"
        versus = (f"{numbers['loader_over_train']:.2f}x the training step's {step['samples_per_s']:.1f} samples/s: "
                  f"the loader {verdict}")
    passed = sizes == {prof.loader_batch} and bad == 0 and all(e["batches"] > 0 for e in epochs)
    return {"passed": passed, "numbers": numbers,
            "criterion": "every batch full, no bad samples (the speed ratio is reported, not judged)",
            "summary": f"{batches_per_s:.2f} batches/s = {loader_sps:.1f} samples/s with {prof.loader_workers} workers "
                       f"at {ctx.data.image_size} px ({prof.speed_model} crops); {versus}"}


def evaluation(ctx: Ctx) -> dict[str, Any]:
    from cosmos.eval.device import full_fp32
    from cosmos.eval.embed import embed_images, load_rgb
    from cosmos.eval.sources import EvalModel
    from cosmos.method import build_student
    from cosmos.text.tokenizer import build_tokenizer

    paths = ctx.data.wait_eval_images()
    torch.manual_seed(0)
    model = build_student(ctx.prof.speed_model, switches("cosmos", ctx.prof)).to(ctx.device).eval()
    size = model.visual.image_size
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    em = EvalModel("student", model, build_tokenizer(model.context_length), size, ctx.device)
    b = min(ctx.prof.eval_batch, len(paths))
    with full_fp32(), torch.no_grad():
        images = torch.stack([em.transform(load_rgb(p)) for p in paths[:b]]).to(ctx.device)
        model.encode_image(images, normalize=True)
        sync(ctx.device)
        repeats, start = 3, time.perf_counter()
        for _ in range(repeats):
            model.encode_image(images, normalize=True)
        sync(ctx.device)
        device_ips = repeats * b / (time.perf_counter() - start)
        start = time.perf_counter()
        emb = embed_images(em, paths, batch_size=ctx.prof.eval_batch)
        e2e_ips = len(paths) / (time.perf_counter() - start)
    norms = emb.norm(dim=-1)
    passed = bool(torch.isfinite(emb).all()) and emb.shape[0] == len(paths) and bool(
        torch.allclose(norms, torch.ones_like(norms), atol=1e-4))
    return {"passed": passed,
            "numbers": {"model": ctx.prof.speed_model, "image_size": size, "images": len(paths), "batch": b,
                        "encode_images_per_s": device_ips, "end_to_end_images_per_s": e2e_ips},
            "criterion": "embeddings of every image finite and unit-norm (fp32, TF32 off, as evaluation runs)",
            "summary": f"encode_image {device_ips:.1f} images/s on the device (batch {b}); decode + eval transform + "
                       f"encode {e2e_ips:.1f} images/s (embed_images, one host thread)"}


SYNC_STEPS = 3
SYNC_MESSAGE = "synchronizing CUDA operation"  # torch's warning text under set_sync_debug_mode("warn")
COSMOS_DIR = str(REPO_ROOT / "cosmos") + os.sep


def _frame(f: traceback.FrameSummary) -> str:
    path = f.filename[len(str(REPO_ROOT)) + 1:] if f.filename.startswith(str(REPO_ROOT) + os.sep) else f.filename
    return f"{path}:{f.lineno} ({f.name}): {(f.line or '').strip()}"


@contextlib.contextmanager
def recording_syncs(found: list[dict[str, Any]], step: list[int]):
    """``torch.cuda.set_sync_debug_mode("warn")`` with every warning it raises recorded, with its Python stack, in
    ``found`` (none shown, none lost to the once-per-location filter); the mode is back at "default" after."""
    def show(message, category, filename, lineno, file=None, line=None):
        if SYNC_MESSAGE not in str(message):
            return
        stack = traceback.extract_stack()[:-1]  # without this function
        while stack and stack[-1].filename.endswith("warnings.py"):
            stack.pop()
        caller = stack[-1] if stack else None
        project = next((f for f in reversed(stack) if f.filename.startswith(COSMOS_DIR)), None)
        found.append({"step": step[0], "caller": _frame(caller) if caller else "?",
                      "in_project": bool(caller and caller.filename.startswith(COSMOS_DIR)),
                      "project_frame": _frame(project) if project else None,
                      "stack": [_frame(f) for f in stack[-8:]]})

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show  # restored by catch_warnings
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode("default")


def host_syncs(ctx: Ctx) -> dict[str, Any]:
    if not ctx.cuda:
        raise Skip("needs CUDA: torch.cuda.set_sync_debug_mode reports the synchronizing CUDA calls of a step; the CPU "
                   "equivalent is tests/training/test_no_host_sync.py (no host read of a device tensor in a step)")
    from cosmos.training.data import batch_to

    rows, found = [], []
    for precision in (ctx.train_precision, "fp16"):
        for accum in (1, 2):
            trainer = build(ctx, "cosmos", label=f"syncs-{precision}-accum{accum}", precision=precision, accum=accum)
            batch = batch_to(loader_batch(trainer), ctx.device)
            sync(ctx.device)
            mine: list[dict[str, Any]] = []
            step = [0]
            with recording_syncs(mine, step):
                for i in range(SYNC_STEPS):
                    step[0] = i
                    trainer.step_on_device(batch)
                    trainer.position.step += 1
            losses = trainer.check_steps()  # the loop's one host sync (at log_every), outside the debug mode
            in_project = [f for f in mine if f["in_project"]]
            callers = sorted({f"{f['caller']} (step {f['step']})" for f in mine})
            rows.append({"precision": precision, "accum_steps": accum, "steps": SYNC_STEPS, "syncs": len(mine),
                         "in_project_code": len(in_project), "final_loss": losses["loss"],
                         "locations": "; ".join(callers[:4]) + (f"; ... {len(callers) - 4} more"
                                                                if len(callers) > 4 else "") or "-"})
            found += [{"precision": precision, "accum_steps": accum, **f} for f in mine]
            del trainer, batch
            free_memory(ctx.device)
    passed = all(r["in_project_code"] == 0 and math.isfinite(r["final_loss"]) for r in rows)
    total = sum(r["syncs"] for r in rows)
    return {"passed": passed, "rows": rows,
            "numbers": {"syncs": found[:50], "model": ctx.prof.check_model, "batch": ctx.prof.check_batch,
                        "how": f"{SYNC_STEPS} Trainer.step_on_device calls per row under "
                               "torch.cuda.set_sync_debug_mode('warn'), every warning's Python stack recorded; "
                               "check_steps (the loop's one read, at log_every) runs after, in mode 'default'"},
            "criterion": "no synchronizing CUDA call made directly by the project's code (cosmos/) in "
                         f"{SYNC_STEPS} COSMOS steps, {ctx.train_precision} and fp16 (GradScaler, fused AdamW), "
                         "train.accum_steps 1 and 2; syncs inside torch are listed with the project line that "
                         "reached them",
            "summary": (f"{total} synchronizing calls in {len(rows)} x {SYNC_STEPS} steps"
                        + (f", {sum(r['in_project_code'] for r in rows)} in the project's code" if total else "")
                        + f" ({ctx.prof.check_model}, batch {ctx.prof.check_batch})")}


SBS_GPU_PRECISIONS = ("bf16", "fp16")
SBS_CPU_PRECISIONS = ("fp32", "bf16")


def side_by_side_ratio(ctx: Ctx) -> dict[str, Any]:
    """``side_by_side.py``'s project / reference ratio. Full mode (the GPU): ViT-B/16 at batch 128, bf16 and fp16,
    on the device; reduced mode (the CPU test): its CPU model (width 384, 6 layers) at batch 8, fp32 and bf16."""
    if ctx.reference_src is None:
        raise Skip("no --reference-src (a checkout of ExplainableML/cosmos)")
    gpu = ctx.cuda and ctx.prof.name == "full"
    precisions = SBS_GPU_PRECISIONS if gpu else SBS_CPU_PRECISIONS
    out = ctx.out_dir("side_by_side") / "side_by_side.json"
    cmd = [sys.executable, str(BENCH / "side_by_side.py"), "--reference-src", str(ctx.reference_src),
           "--rounds", "1", "--steps", "3", "--batch", str(ctx.prof.sbs_batch), "--precision", *precisions,
           "--threads", str(os.cpu_count() or 1), "--json", str(out)]
    if gpu:
        cmd += ["--device", "cuda", "--model", "vit-b-16"]
    free_memory(ctx.device)  # the children need the GPU's memory
    # Its own session: at the deadline the script and the child it is running (holding the GPU) go together.
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
                          start_new_session=True) as proc:
        try:
            _, stderr = proc.communicate(timeout=max(ctx.remaining(), 1))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise RuntimeError(f"side_by_side.py did not finish within the time budget ({' '.join(cmd[1:])})")
    if proc.returncode:
        raise RuntimeError(f"side_by_side.py exited {proc.returncode}:\n{stderr[-2000:]}")
    report = json.loads(out.read_text())
    summary, runs = report["summary"], report["runs"]
    rows = []
    for p in precisions:
        s = summary[p]
        row = {"precision": p, "status": ("OOM: " + ", ".join(s["oom"])) if s.get("oom") else "ok",
               "project_s_per_step": s.get("project_s_per_step"), "reference_s_per_step": s.get("reference_s_per_step"),
               "ratio": s.get("ratio"), "loss_diff_step0": (s.get("loss_diff") or [None])[0],
               "project_loss_step0": None if s.get("oom") else runs[p]["project"][0]["losses"][0]["loss"]}
        if gpu:
            row.update(project_peak_gib=(s.get("project_peak_cuda_mib") or 0) / 1024 or None,
                       reference_peak_gib=(s.get("reference_peak_cuda_mib") or 0) / 1024 or None)
        rows.append(row)
    ran = [r for r in rows if r["status"] == "ok"]
    if gpu:  # mixed precision on both sides: the step-0 losses differ by rounding only
        tol = RTOL_PRECISION
        passed = all(r["loss_diff_step0"] <= tol * abs(r["project_loss_step0"]) + ATOL_PRECISION for r in ran)
        criterion = (f"step-0 losses of project and reference within {tol:g} relative + {ATOL_PRECISION:g} "
                     "(bf16/fp16 rounding; the same step); an OOM is recorded, not failed")
        where = f"{report.get('config', {}).get('gpu') or 'GPU'}, ViT-B/16, batch {ctx.prof.sbs_batch}"
    else:
        fp32 = next(r for r in rows if r["precision"] == "fp32")
        passed = fp32["loss_diff_step0"] <= 1e-4
        criterion = "the fp32 step-0 losses of project and reference agree to 1e-4 (the same step)"
        where = f"CPU, side_by_side.py's model, batch {ctx.prof.sbs_batch}"
    numbers = {"command": " ".join(cmd[1:]), "device": "cuda" if gpu else "cpu",
               "model": "ViT-B-16" if gpu else "side_by_side.py narrow (width 384, 6 layers)",
               "ratio": "reference s/step / project s/step (1 round, 1 warm-up + 3 timed steps per child)"}
    if gpu:
        numbers["tf32"] = json.dumps(report.get("config", {}).get("tf32"))
    return {"passed": passed, "rows": rows, "numbers": numbers, "criterion": criterion,
            "summary": "; ".join(f"{r['precision']} {r['ratio']:.2f}x (step-0 loss diff {r['loss_diff_step0']:.1e})"
                                 if r["status"] == "ok" else f"{r['precision']} {r['status']}" for r in rows)
                       + f" ({where})"}


SECTIONS = {
    "placement": placement, "precision": precision, "learning": learning, "gradscaler": gradscaler,
    "throughput": throughput, "ddp": ddp, "checkpoint": checkpoint, "accumulation": accumulation,
    "host_syncs": host_syncs, "loader": loader, "evaluation": evaluation, "side_by_side": side_by_side_ratio,
}
# Seconds a section is expected to need (full mode on one H100, reduced mode on 2 CPU cores): it is skipped, as
# "skipped (time budget)", when less than this is left.
ESTIMATE_S = {
    "placement": (30, 6), "precision": (15, 3), "learning": (25, 5), "gradscaler": (25, 1), "throughput": (120, 12),
    "ddp": (60, 10), "checkpoint": (30, 5), "accumulation": (30, 4), "host_syncs": (40, 1), "loader": (45, 8),
    "evaluation": (20, 3),
    # full: 4 children (project, reference x bf16, fp16), each importing torch, building ViT-B/16 and running 4
    # steps at batch 128; reduced: the CPU model at batch 8, fp32 and bf16
    "side_by_side": (150, 60),
}
