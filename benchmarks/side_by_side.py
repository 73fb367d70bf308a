"""COSMOS training step of this project against the reference implementation, side by side (a script, not a test).

The reference is ExplainableML/cosmos (an OpenCLIP fork). The user points ``--reference-src`` at a checkout;
its ``src/`` is put first on ``sys.path`` of the reference's child processes, so the fork's own ``open_clip``
shadows the pip package there, and its own ``training.train.train_one_epoch`` runs the steps. Nothing of the
reference is copied into this project: it is imported from the user's checkout at run time.

Configuration (issue 12): ViT with width 384, 6 layers, heads of 64, patch 16, 224 px; text width 256,
6 layers, 4 heads, context 77; E = 256; batch 8; 2 global crops of 224 + 6 local crops of 96 px; 8 captions
(2 global + 6 local); COSMOS loss with cross-attention, EMA teacher (momentum 0.95, before the optimizer
step, as the reference does), AdamW (lr 5e-4, betas (0.9, 0.98), wd 0.5 on the reference's groups).

Protocol:

- every measurement is its own child process (so its peak RSS is its own), run A B A B: in each round the
  project, then the reference, for each precision;
- a child builds the student with ``torch.manual_seed(0)``; the project's child writes that initial state
  dict to a file the reference's child loads (strict), so both start from identical weights and see the
  identical synthetic batch every step;
- a child runs 1 warm-up step and ``--steps`` timed steps and reports its median s/step, the loss terms of
  its first two steps (before and after one optimizer + EMA update) and its peak RSS;
- the summary prints, per precision, the median s/step of each implementation over the rounds, the
  throughput ratio (reference s/step / project s/step, per round and its median), the peak RSS, and the
  max-abs difference of the loss between the two at step 0 and at step 1.

Autocast: the fork's ``get_autocast('amp_bf16')`` is ``torch.cuda.amp.autocast``, which does nothing to CPU
tensors. On CPU the reference's child therefore swaps it for ``torch.autocast('cpu', bfloat16)``, the same
context the project uses, so ``bf16`` means bf16 autocast for both. ``fp32`` is the fork's ``--precision fp32``.

On a GPU (``--device cuda``): models and batch on the device (the batch is moved once, before the steps, as
a loader's pinned copy would overlap them), ``torch.cuda.synchronize()`` before every time mark, peak memory
``torch.cuda.max_memory_allocated`` from after the set-up (the warm-up step's optimizer state included), the
TF32 switches left at torch's defaults for both and recorded (the fork's ``main.py`` turns TF32 matmuls on; its
``train_one_epoch``, which runs here, does not). The fork's own autocast works there, so nothing is swapped:
``bf16`` is its ``--precision amp_bf16``, ``fp16`` its ``--precision amp`` (fp16 autocast, fp32 weights and a
``GradScaler``, as its ``main.py`` builds it), against the project's ``Precision("fp16", cuda)`` (autocast and
GradScaler) through its ``Trainer``. fp16 on CPU is refused. The project gets the batch's host ``text_ends``,
as its loader gives them. A child that runs out of GPU memory reports "OOM" instead of a time.

Models (``--model``): ``narrow`` is the configuration above; ``vit-b-16`` is OpenCLIP's ``ViT-B-16`` as the
project builds it (``conf/model/vit-b-16.yaml``: ``cosmos.models.configs.get_model_config("ViT-B-16")``, vision
width 768, 12 layers, 12 heads, patch 16, 224 px; text width 512, 12 layers, 8 heads, context 77; E = 512).
The parent process resolves the config and hands the same dict to both children; the reference registers it
under a name of its own in the fork's model registry, as with ``narrow``.

Usage::

    python benchmarks/side_by_side.py --reference-src ../cosmos-ref --rounds 3 --steps 3
    python benchmarks/side_by_side.py              # the project alone
    python benchmarks/side_by_side.py --reference-src ../cosmos-ref --device cuda --model vit-b-16 \
        --batch 128 --precision bf16 fp16 --rounds 1 --steps 3        # the GPU ratio (benchmarks/gpu_check.py)
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "bf16", "fp16")
DEFAULT_PRECISIONS = ("fp32", "bf16")
DEVICES = ("cpu", "cuda")
MODELS = ("narrow", "vit-b-16")
EOT_ID = 49407
GLOBAL_CROPS, LOCAL_CROPS, GLOBAL_CAPTIONS, LOCAL_CAPTIONS = 2, 6, 2, 6
MOMENTUM, LR, WD, BETAS, EPS = 0.95, 5e-4, 0.5, (0.9, 0.98), 1e-8

MODEL_SPEEDUPS = ("fused_blocks", "trim_text", "trim_vision", "shared_cross_kv", "math_attention")
SPEEDUPS = {**dict.fromkeys(MODEL_SPEEDUPS, True), "fused_adamw": True, "tune_malloc": True}
MODEL_CONFIG: dict[str, Any] = {
    "embed_dim": 256,
    "vision_cfg": {"image_size": 224, "patch_size": 16, "width": 384, "layers": 6, "head_width": 64},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 256, "heads": 4, "layers": 6},
}


def model_config(model: str) -> dict[str, Any]:
    """``--model``: ``narrow`` (:data:`MODEL_CONFIG`) or ``vit-b-16``, the project's ``ViT-B-16`` config."""
    if model == "narrow":
        return copy.deepcopy(MODEL_CONFIG)
    if model == "vit-b-16":
        from cosmos.models.configs import get_model_config

        return get_model_config("ViT-B-16")
    raise ValueError(f"--model {model!r}: one of {list(MODELS)}")


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _timer(device: str) -> float:
    """``time.perf_counter()`` after the device's queue has drained (a time mark)."""
    _sync(device)
    return time.perf_counter()


def tf32_settings() -> dict[str, Any]:
    return {"cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision()}


def _to(images: list[torch.Tensor], texts: torch.Tensor, device: str) -> tuple[list[torch.Tensor], torch.Tensor]:
    return [x.to(device) for x in images], texts.to(device)


def synthetic_batch(batch: int, context: int = 77) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Crops ``[B, 3, S, S]`` (2 x 224 then 6 x 96) and caption-major ids ``[8B, ctx]``.

    Global captions (the first 2B rows) are 20-76 tokens long, local ones (one sentence) 8-24, each ending in
    EOT and zero-padded, like tokenized text crops.
    """
    g = torch.Generator().manual_seed(0)
    sizes = [224] * GLOBAL_CROPS + [96] * LOCAL_CROPS
    images = [torch.randn(batch, 3, s, s, generator=g) for s in sizes]
    rows = (GLOBAL_CAPTIONS + LOCAL_CAPTIONS) * batch
    lengths = torch.cat([torch.randint(20, context, (GLOBAL_CAPTIONS * batch,), generator=g),
                         torch.randint(8, 25, (LOCAL_CAPTIONS * batch,), generator=g)])
    texts = torch.randint(1, EOT_ID, (rows, context), generator=g)
    texts[torch.arange(rows), lengths] = EOT_ID
    texts[torch.arange(context)[None, :] > lengths[:, None]] = 0
    return images, texts


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _flash_cpu_flop(query, key, value, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query, key, value)


def _flash_cpu_backward_flop(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_out, query, key, value)


def flop_counter():
    """``FlopCounterMode`` that also counts the CPU flash-attention kernels, which torch's registry leaves out.

    Counted: matmuls, convolutions and attention (``4 b h s_q s_k d`` forward, 2.5 times that backward, as
    torch counts; causal masks are not discounted), the work a roofline bound is about; elementwise ops,
    norms and the optimizer are not FLOPs here.
    """
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    return FlopCounterMode(display=False, custom_mapping={
        aten._scaled_dot_product_flash_attention_for_cpu: _flash_cpu_flop,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: _flash_cpu_backward_flop})


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5, device: str = "cpu") -> float:
    """The best GFLOP/s of an ``n x n @ n x n`` ``torch.mm`` in ``dtype`` on this CPU or GPU (the roofline's peak)."""
    a, b = torch.randn(n, n).to(device, dtype), torch.randn(n, n).to(device, dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = _timer(device)
        torch.mm(a, b)
        best = min(best, _timer(device) - start)
    return 2 * n**3 / best / 1e9


STEP_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class _Profile:
    """``torch.profiler`` over the timed steps; writes the top ops by self CPU time to ``path`` (if given)."""

    def __init__(self, path: Path | None, device: str = "cpu"):
        self.path, self.prof, self.device = path, None, device

    def start(self) -> None:
        if self.path is not None:
            from torch.profiler import ProfilerActivity, profile

            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device == "cuda" else [])
            self.prof = profile(activities=activities, record_shapes=True)
            self.prof.start()

    def stop(self) -> None:
        if self.prof is not None:
            _sync(self.device)
            self.prof.stop()
            sort = "self_cuda_time_total" if self.device == "cuda" else "self_cpu_time_total"
            table = self.prof.key_averages(group_by_input_shape=True).table(
                sort_by=sort, row_limit=30, max_name_column_width=45, max_shapes_column_width=60)
            self.path.write_text(table + "\n")
            self.prof = None


def _result(step_times: list[float], losses: list[dict[str, float]], batch: int, device: str = "cpu") -> dict[str, Any]:
    timed = step_times[1:]  # the first step is the warm-up
    median = statistics.median(timed)
    out = {"s_per_step": median, "step_times": timed, "samples_per_s": batch / median,
           "losses": losses[:2], "peak_rss_mib": _peak_rss_mib()}
    if device == "cuda":
        out.update(peak_cuda_mib=torch.cuda.max_memory_allocated() / 2**20, gpu=torch.cuda.get_device_name(),
                   tf32=tf32_settings())
    return out


def _reset_peak(device: str) -> None:
    """Start the peak-memory count here (after the set-up): the steps' activations, gradients, optimizer state."""
    if device == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats()


# ------------------------------------------------------------------------------------------ project


def run_project(precision: str, steps: int, batch: int, init: Path, speedups: dict[str, bool],
                profile: Path | None = None, count_flops: bool = False, device: str = "cpu",
                config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The project's ``Trainer.train_step`` at ``config`` (default :data:`MODEL_CONFIG`) on ``device``; writes its
    initial weights (built on the CPU with seed 0) to ``init``.

    ``speedups`` overrides :data:`SPEEDUPS` (the project's defaults: ``model.fused_blocks``,
    ``model.trim_text``, ``model.trim_vision``, ``model.shared_cross_kv``, ``model.math_attention``,
    ``optim.fused``, ``train.tune_malloc``). ``count_flops`` adds one untimed step under :func:`flop_counter`
    and the matmul peak of the step's dtype (the roofline in the summary).
    """
    import numpy as np

    from cosmos.method import DistillSwitches, Objective, build_student
    from cosmos.teacher.ema import EMATeacher
    from cosmos.training.loop import Trainer
    from cosmos.training.optim import build_optimizer
    from cosmos.training.precision import Precision
    from cosmos.training.runtime import tune_malloc
    import yaml

    unknown = sorted(set(speedups) - set(SPEEDUPS))
    if unknown:
        raise ValueError(f"unknown speed-ups {unknown}; known: {sorted(SPEEDUPS)}")
    on = {**SPEEDUPS, **speedups}
    if on["tune_malloc"]:
        tune_malloc()

    section = yaml.safe_load((REPO_ROOT / "conf" / "distill" / "cosmos.yaml").read_text())
    switches = DistillSwitches.from_params(section).replace(
        global_crop_size=224, local_crop_size=96, momentum=MOMENTUM)
    torch.manual_seed(0)
    student = build_student(copy.deepcopy(config or MODEL_CONFIG), switches,
                            **{k: on[k] for k in MODEL_SPEEDUPS})
    if not init.exists():
        torch.save(student.state_dict(), init)
    student = student.to(device)  # as build_trainer: the teacher, objective and optimizer follow the student
    total = steps + 1 + count_flops
    trainer = Trainer(
        student=student, teacher=EMATeacher(student), objective=Objective(switches).to(device),
        loader=SimpleNamespace(batches_per_epoch=total, batch=batch, world=1),
        optimizer=build_optimizer(student, lr=LR, weight_decay=WD, betas=BETAS, eps=EPS, fused=on["fused_adamw"]),
        precision=Precision(precision, torch.device(device)), lr=np.full(total, LR),
        momentum=np.full(total, MOMENTUM), placement="reference", epochs=1, name="cosmos",
    )
    images, texts = synthetic_batch(batch)
    text_ends = texts.argmax(dim=-1) + 1  # on the host, as the loader collates them (cosmos.method.collate)
    images, texts = _to(images, texts, device)
    data = {"images": images, "texts": texts, "text_ends": text_ends}
    times, losses, prof = [], [], _Profile(profile, device)
    _reset_peak(device)
    for i in range(steps + 1):  # warm-up + timed; the trainer's schedules also cover the FLOP-count step
        if i == 1:
            prof.start()
        start = _timer(device)
        terms = trainer.train_step(data)  # step_on_device + check_steps (its one host sync)
        times.append(_timer(device) - start)
        trainer.position.step += 1
        losses.append(terms)
    prof.stop()
    result = _result(times, losses, batch, device)
    if count_flops:
        with flop_counter() as counter:
            trainer.train_step(data)
        result.update(gflop_per_step=counter.get_total_flops() / 1e9,
                      matmul_peak_gflops=matmul_peak(STEP_DTYPES[precision], device=device))
    return result


# ---------------------------------------------------------------------------------------- reference


class _Loader:
    """The slice of the fork's ``DataInfo`` that ``train_one_epoch`` reads: the same batch ``n`` times."""

    def __init__(self, batch: tuple[list[torch.Tensor], torch.Tensor], n: int, batch_size: int):
        self.dataloader = self
        self.num_batches, self.num_samples, self._batch = n, n * batch_size, batch

    def set_epoch(self, epoch: int) -> None:
        pass

    def __iter__(self):
        return iter([self._batch] * self.num_batches)


REFERENCE_PRECISION = {"fp32": "fp32", "bf16": "amp_bf16", "fp16": "amp"}  # the fork's --precision


def _reference_args(precision: str, batch: int, device: str = "cpu") -> SimpleNamespace:
    """The ``args`` fields the fork's ``train_one_epoch`` reads, set as its COSMOS training scripts set them."""
    return SimpleNamespace(
        device=device, precision=REFERENCE_PRECISION[precision], accum_freq=1,
        use_imagecrop_aug=True, num_sampled_captions=GLOBAL_CAPTIONS + LOCAL_CAPTIONS,
        global_crops_number=GLOBAL_CROPS, local_crops_number=LOCAL_CROPS, distill=False, cosmos=True,
        skip_scheduler=False, fix_momentum=True, momentum_teacher=MOMENTUM, horovod=False, grad_clip_norm=None,
        log_every_n_steps=10**9, batch_size=batch, world_size=1, rank=0, local_rank=0, wandb=False,
    )


def run_reference(src: Path, precision: str, steps: int, batch: int, init: Path,
                  profile: Path | None = None, count_flops: bool = False, device: str = "cpu",
                  config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fork's own model, loss and ``train_one_epoch`` on the project's initial weights and batch.

    ``count_flops`` runs one more step, untimed, under :func:`flop_counter`. On CUDA, ``fp16`` passes the fork's
    loop a ``GradScaler`` as its ``main.py`` does for ``--precision amp``.
    """
    sys.path.insert(0, str(src / "src"))
    import open_clip
    import training.train as ref_train

    if not Path(open_clip.__file__).resolve().is_relative_to((src / "src").resolve()):
        raise RuntimeError(f"open_clip came from {open_clip.__file__}, not from {src / 'src'}")
    if precision == "bf16" and device == "cpu":  # the fork's CUDA-only autocast is a no-op on CPU tensors
        ref_train.get_autocast = lambda _p: (lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    if precision == "fp16" and device != "cuda":
        raise ValueError("fp16 (the fork's --precision amp, with a GradScaler) needs --device cuda")
    args = _reference_args(precision, batch, device)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None  # the fork's main.py: amp only
    name = "side-by-side-cosmos"
    open_clip.factory._MODEL_CONFIGS[name] = copy.deepcopy(config or MODEL_CONFIG)
    torch.manual_seed(0)
    student = open_clip.create_model(name, precision=args.precision, device=device, output_dict=True,
                                     output_all=True, attentional_pool=True, cosmos=True)
    student.load_state_dict(torch.load(init, weights_only=True), strict=True)
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad = False

    def no_decay(n: str, p: torch.Tensor) -> bool:
        return p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n

    named = [(n, p) for n, p in student.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": [p for n, p in named if no_decay(n, p)], "weight_decay": 0.0},
                                   {"params": [p for n, p in named if not no_decay(n, p)], "weight_decay": WD}],
                                  lr=LR, betas=BETAS, eps=EPS)
    loss_fn = open_clip.create_loss(SimpleNamespace(distill=False, model=name, siglip=False, cosmos=True,
                                                    local_loss=False, gather_with_grad=False, rank=0,
                                                    world_size=1, horovod=False))
    losses: list[dict[str, torch.Tensor]] = []

    def recording_loss(**kwargs: Any) -> dict[str, torch.Tensor]:
        out = loss_fn(**kwargs)  # kept on the device, read after the steps: a read here would sync mid-step
        losses.append({**{k: v.detach() for k, v in out.items()}, "loss": sum(out.values()).detach()})
        return out

    marks: list[float] = []
    prof = _Profile(profile, device)
    counter = flop_counter() if count_flops else None

    def scheduler(step: int) -> None:  # called by train_one_epoch at the start of every step
        if len(marks) == 1:
            prof.start()
        marks.append(_timer(device))
        if counter is not None and len(marks) == steps + 2:  # the mark ends the last timed step
            prof.stop()
            counter.__enter__()
        for group in optimizer.param_groups:
            group["lr"] = LR

    images, texts = synthetic_batch(batch)
    n_cap = GLOBAL_CAPTIONS + LOCAL_CAPTIONS
    per_sample = texts.view(n_cap, batch, -1).permute(1, 0, 2).contiguous()  # the fork's loader layout [B, n, ctx]
    images, per_sample = _to(images, per_sample, device)
    data = {"train": _Loader((images, per_sample), steps + 1 + count_flops, batch)}
    _reset_peak(device)
    ref_train.train_one_epoch(student, teacher, data, recording_loss, 0, optimizer, scaler, scheduler,
                              lambda _step: MOMENTUM, None, args)
    if counter is None:
        marks.append(_timer(device))
    else:
        counter.__exit__(None, None, None)
    prof.stop()
    floats = [{k: float(v) for k, v in terms.items()} for terms in losses]
    result = _result([b - a for a, b in zip(marks, marks[1:])], floats, batch, device)
    if counter is not None:
        result["gflop_per_step"] = counter.get_total_flops() / 1e9
    return result


# ------------------------------------------------------------------------------------------- driver


def _child(args: argparse.Namespace, impl: str, precision: str, init: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--_one", impl, precision, "--steps", str(args.steps), "--batch",
           str(args.batch), "--threads", str(args.threads), "--_init", str(init),
           "--speedups", json.dumps(args.speedups), "--device", args.device, "--model", args.model,
           "--_config", json.dumps(args._config)]
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        cmd += ["--_profile", str(args.profile / f"{impl}-{precision}.txt")]
    if args.reference_src is not None:
        cmd += ["--reference-src", str(args.reference_src)]
    if args.flops:
        cmd += ["--flops"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT)
    if proc.returncode:
        raise RuntimeError(f"{impl}/{precision} child failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _loss_diff(a: dict[str, float], b: dict[str, float]) -> float:
    return max(abs(a[k] - b[k]) for k in ("clip_loss", "distill_loss", "loss"))


def _oom_row(precision: str, by_impl: dict[str, list[dict[str, Any]]]) -> tuple[str, dict[str, Any]]:
    """A precision where a child ran out of GPU memory: its times are not comparable, so only who ran out."""
    status = {impl: ("OOM" if any(r.get("oom") for r in rs) else "ok") for impl, rs in by_impl.items()}
    row: dict[str, Any] = {"oom": [impl for impl, st in status.items() if st == "OOM"]}
    for impl, rs in by_impl.items():
        ran = [r for r in rs if not r.get("oom")]
        if ran:
            row[f"{impl}_s_per_step"] = statistics.median(r["s_per_step"] for r in ran)
            row[f"{impl}_peak_cuda_mib"] = max(r.get("peak_cuda_mib", 0.0) for r in ran)
    cells = ["OOM" if status[i] == "OOM" else f"{row[f'{i}_s_per_step']:.3f}" for i in ("project", "reference")
             if i in status]
    cells += ["-"] * (2 - len(cells))
    return f"| {precision} | {cells[0]} | {cells[1]} | - | - | - | - | - |", row


def summarize(runs: dict[str, dict[str, list[dict[str, Any]]]], device: str = "cpu") -> tuple[str, dict[str, Any]]:
    """Per precision: medians over rounds, per-round and median throughput ratio, peak memory (the process's RSS on
    CPU, ``max_memory_allocated`` on CUDA), loss differences. A precision where a child ran out of GPU memory
    gets a row saying which one, and no ratio."""
    lines, summary = [], {}
    mem, unit = ("peak_cuda_mib", "GPU MiB") if device == "cuda" else ("peak_rss_mib", "MiB")
    head = ("| precision | project s/step | reference s/step | ratio (median) | ratio per round | "
            f"project {unit} | reference {unit} | max abs loss diff step 0 / step 1 |")
    lines += [head, "|" + "---|" * head.count(" | ") + "---|"]
    for precision, by_impl in runs.items():
        if any(r.get("oom") for rs in by_impl.values() for r in rs):
            line, summary[precision] = _oom_row(precision, by_impl)
            lines.append(line)
            continue
        proj = by_impl["project"]
        row: dict[str, Any] = {"project_s_per_step": statistics.median(r["s_per_step"] for r in proj),
                               "project_peak_rss_mib": max(r["peak_rss_mib"] for r in proj)}
        if device == "cuda":
            row["project_peak_cuda_mib"] = max(r["peak_cuda_mib"] for r in proj)
        ref = by_impl.get("reference")
        if ref:
            ratios = [b["s_per_step"] / a["s_per_step"] for a, b in zip(proj, ref)]
            row.update(reference_s_per_step=statistics.median(r["s_per_step"] for r in ref),
                       ratios=ratios, ratio=statistics.median(ratios),
                       reference_peak_rss_mib=max(r["peak_rss_mib"] for r in ref),
                       loss_diff=[_loss_diff(proj[0]["losses"][i], ref[0]["losses"][i]) for i in (0, 1)])
            if device == "cuda":
                row["reference_peak_cuda_mib"] = max(r["peak_cuda_mib"] for r in ref)
            lines.append(f"| {precision} | {row['project_s_per_step']:.3f} | {row['reference_s_per_step']:.3f} "
                         f"| **{row['ratio']:.2f}x** | {', '.join(f'{r:.2f}' for r in ratios)} "
                         f"| {row['project_' + mem]:.0f} | {row['reference_' + mem]:.0f} "
                         f"| {row['loss_diff'][0]:.2e} / {row['loss_diff'][1]:.2e} |")
        else:
            lines.append(f"| {precision} | {row['project_s_per_step']:.3f} | - | - | - "
                         f"| {row['project_' + mem]:.0f} | - | - |")
        summary[precision] = row
    roof = roofline(runs)
    if roof:
        summary["roofline"] = roof
        lines += ["", roofline_table(roof)]
    return "\n".join(lines), summary


def roofline(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, dict[str, float]]:
    """Per precision, what the FLOP counts say a same-math step could reach on this machine.

    ``bound_ratio`` = reference s/step / (project GFLOP / matmul peak): the ratio of a project step that ran
    every counted FLOP at the peak of one large ``torch.mm`` and everything else (norms, GELU, softmax, the
    optimizer, the EMA) in zero time, so no exact change short of cutting FLOPs can pass it.
    ``util_for_2x`` is the share of that peak the whole step would need for a ratio of 2.0.
    """
    out = {}
    for precision, by_impl in runs.items():
        proj = [r for r in by_impl["project"] if not r.get("oom")]
        ref = [r for r in by_impl.get("reference") or [] if not r.get("oom")]
        if not proj or "gflop_per_step" not in proj[0]:
            continue
        gflop = proj[0]["gflop_per_step"]
        peak = statistics.median(r["matmul_peak_gflops"] for r in proj)
        s_proj = statistics.median(r["s_per_step"] for r in proj)
        row = {"project_gflop": gflop, "matmul_peak_gflops": peak, "project_gflops": gflop / s_proj,
               "project_util": gflop / s_proj / peak}
        if ref and "gflop_per_step" in ref[0]:
            s_ref = statistics.median(r["s_per_step"] for r in ref)
            row.update(reference_gflop=ref[0]["gflop_per_step"], reference_util=ref[0]["gflop_per_step"] / s_ref / peak,
                       bound_ratio=s_ref / (gflop / peak), util_for_2x=gflop / (s_ref / 2) / peak)
        out[precision] = row
    return out


def roofline_table(roof: dict[str, dict[str, float]]) -> str:
    head = ("| precision | project GFLOP/step | reference GFLOP/step | matmul peak GFLOP/s | project % of peak "
            "| reference % of peak | ratio bound at 100% of peak | % of peak a 2.0x step needs |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for precision, r in roof.items():
        if "bound_ratio" in r:
            lines.append(f"| {precision} | {r['project_gflop']:.0f} | {r['reference_gflop']:.0f} "
                         f"| {r['matmul_peak_gflops']:.0f} | {100 * r['project_util']:.0f}% "
                         f"| {100 * r['reference_util']:.0f}% | {r['bound_ratio']:.2f}x | {100 * r['util_for_2x']:.0f}% |")
        else:
            lines.append(f"| {precision} | {r['project_gflop']:.0f} | - | {r['matmul_peak_gflops']:.0f} "
                         f"| {100 * r['project_util']:.0f}% | - | - | - |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-src", type=Path, help="a checkout of ExplainableML/cosmos (its src/ is used)")
    parser.add_argument("--precision", nargs="+", default=list(DEFAULT_PRECISIONS), choices=PRECISIONS,
                        help="fp32, bf16 (autocast), fp16 (autocast + GradScaler; --device cuda only)")
    parser.add_argument("--device", choices=DEVICES, default="cpu",
                        help="where both implementations run (cuda: models and batch on the GPU, synced timing)")
    parser.add_argument("--model", choices=MODELS, default="narrow",
                        help="narrow: width 384, 6 layers (the CPU configuration); vit-b-16: OpenCLIP's ViT-B-16")
    parser.add_argument("--rounds", type=int, default=3, help="A B rounds per precision")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per child, after 1 warm-up step")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch CPU threads in every child; give the cores no other process is using")
    parser.add_argument("--speedups", type=json.loads, default={},
                        help='JSON overriding the project\'s speed-ups, e.g. \'{"fused_blocks": false}\' '
                             f"(defaults {json.dumps(SPEEDUPS)})")
    parser.add_argument("--json", type=Path, help="also write every child's result and the summary here")
    parser.add_argument("--profile", type=Path, help="write torch.profiler top ops of every child here, one file each "
                        "(profiled steps run slower: profile with --rounds 1, time without)")
    parser.add_argument("--flops", action="store_true",
                        help="count each implementation's FLOPs in one extra, untimed step and measure the matmul "
                             "peak: prints the roofline bound on the ratio (the best any same-math step could reach)")
    parser.add_argument("--_profile", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--_one", nargs=2, metavar=("IMPL", "PRECISION"), help=argparse.SUPPRESS)
    parser.add_argument("--_init", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--_config", type=json.loads, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Refuse what cannot run, before any child starts."""
    if "fp16" in args.precision and args.device != "cuda":
        raise SystemExit("--precision fp16 needs --device cuda: fp16 autocast trains with a GradScaler, which both "
                         "implementations run on CUDA only (cosmos.training.precision refuses fp16 on CPU); use "
                         "fp32 or bf16 on the CPU")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device cuda: CUDA is not available (torch {torch.__version__}, CUDA build "
                         f"{torch.version.cuda})")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args._one:
        impl, precision = args._one
        try:
            if impl == "project":
                result = run_project(precision, args.steps, args.batch, args._init, args.speedups, args._profile,
                                     args.flops, args.device, args._config)
            else:
                result = run_reference(args.reference_src, precision, args.steps, args.batch, args._init,
                                       args._profile, args.flops, args.device, args._config)
        except torch.cuda.OutOfMemoryError as err:  # recorded as "OOM", not a failure of the run
            result = {"oom": True, "error": str(err).splitlines()[0][:500], "peak_rss_mib": _peak_rss_mib()}
        print(json.dumps(result))
        return
    check_args(args)
    args._config = model_config(args.model)
    if args.reference_src is not None and not (args.reference_src / "src" / "open_clip" / "model.py").exists():
        raise SystemExit(f"--reference-src {args.reference_src}: no src/open_clip/model.py there; point it at a "
                         "checkout of https://github.com/ExplainableML/cosmos")
    impls = ["project"] + (["reference"] if args.reference_src is not None else [])
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {p: {i: [] for i in impls} for p in args.precision}
    with tempfile.TemporaryDirectory() as tmp:
        init = Path(tmp) / "init.pt"
        for rnd in range(args.rounds):
            for precision in args.precision:
                for impl in impls:
                    result = _child(args, impl, precision, init)
                    runs[precision][impl].append(result)
                    took = "OOM" if result.get("oom") else f"{result['s_per_step']:.3f} s/step"
                    print(f"round {rnd + 1} {precision} {impl}: {took}", file=sys.stderr, flush=True)
    text, summary = summarize(runs, args.device)
    header = (f"torch={torch.__version__} threads={args.threads} batch={args.batch} rounds={args.rounds} "
              f"timed steps/child={args.steps} project speed-ups={json.dumps({**SPEEDUPS, **args.speedups})}")
    config = {"device": args.device, "model": args.model, "model_config": args._config}
    if args.device == "cuda":  # as the children saw them (the parent does not initialize CUDA)
        seen = next((r for rs in runs.values() for r2 in rs.values() for r in r2 if "gpu" in r), {})
        config.update(gpu=seen.get("gpu"), tf32=seen.get("tf32", tf32_settings()))
    if args.device != "cpu" or args.model != "narrow":  # the default CPU run prints what it always printed
        header += f" device={args.device} model={args.model}"
        if args.device == "cuda":
            header += f" gpu={config['gpu']!r} tf32={json.dumps(config['tf32'])}"
    print(header)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, "runs": runs, "config": config}, indent=2) + "\n")


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
