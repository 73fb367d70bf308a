"""Training-step throughput of CLIP, SiLC and COSMOS at one fixed model and batch (a script, not a test).

Each (method, precision) pair runs in its own child process, so its peak memory is its own. The child
builds the student with :func:`cosmos.method.build_student` and runs the library's own
:meth:`cosmos.training.loop.Trainer.train_step` (objective -> sum -> backward -> EMA -> AdamW step ->
clamp) on synthetic random tensors: no data loading, no checkpointing, no logging.

- model: ViT-B/16 proportions narrowed for CPU (patch 16 at 224 px, context 77, the CLIP vocabulary) with
  width 256 and 4 layers in both towers, E = 256 (``--width``/``--layers`` to change);
- views: batch 8; the methods' own ``conf/distill/*.yaml`` switches at 224 / 96 px crops (CLIP: 1 crop,
  1 caption; SiLC: 2 global + 6 local crops, 1 caption; COSMOS: 2 + 6 crops, 2 + 6 captions);
- FLOPs per step: :class:`torch.utils.flop_counter.FlopCounterMode` over one whole step (student forward
  and backward, teacher forward), i.e. matmul / attention FLOPs only;
- utilisation: achieved FLOP/s over the measured peak of a large ``torch.mm`` in the same dtype on the
  same device (fp32 steps against the fp32 peak, bf16 autocast steps against the bf16 peak);
- memory: peak RSS of the child process on CPU (``resource.getrusage``), ``torch.cuda.max_memory_allocated``
  on CUDA.

Usage::

    python benchmarks/train_step.py --device cpu --steps 3 --threads 1 --json /tmp/train_step.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
METHODS = ("clip", "silc", "cosmos")
PRECISIONS = ("fp32", "bf16")
EOT_ID = 49407  # CLIP's end-of-text id: the text tower pools at the argmax id


def model_config(width: int, layers: int) -> dict[str, Any]:
    """OpenCLIP ``ViT-B-16`` with both towers narrowed to ``width`` and ``layers`` (heads of 64)."""
    return {
        "embed_dim": width,
        "vision_cfg": {"image_size": 224, "patch_size": 16, "width": width, "layers": layers, "head_width": 64},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": width, "heads": width // 64,
                     "layers": layers},
    }


def switches_for(method: str, global_size: int = 224, local_size: int = 96):
    """The method's ``conf/distill/<method>.yaml`` switches, at the reference 224 / 96 px crops by default."""
    from cosmos.method import DistillSwitches

    section = yaml.safe_load((REPO_ROOT / "conf" / "distill" / f"{method}.yaml").read_text())
    return DistillSwitches.from_params(section).replace(global_crop_size=global_size, local_crop_size=local_size)


def synthetic_batch(switches, batch: int, context: int, device: torch.device) -> dict[str, Any]:
    """Random crops ``[B, 3, S, S]`` (crop-major) and token ids ``[k*B, ctx]`` ending in EOT at random lengths."""
    g = torch.Generator().manual_seed(0)
    sizes = [switches.global_crop_size] * switches.num_global_crops + [switches.local_crop_size] * switches.local_crops
    images = [torch.randn(batch, 3, s, s, generator=g) for s in sizes]
    rows = switches.num_captions * batch
    texts = torch.randint(1, EOT_ID, (rows, context), generator=g)
    lengths = torch.randint(8, context, (rows,), generator=g)
    texts[torch.arange(rows), lengths] = EOT_ID
    texts[torch.arange(context)[None, :] > lengths[:, None]] = 0
    return {"images": [x.to(device) for x in images], "texts": texts.to(device)}


def build_step(method: str, precision: str, device: torch.device, width: int, layers: int, steps: int, *,
               global_size: int = 224, local_size: int = 96):
    """A :class:`Trainer` over a stand-in loader (only its sizes are read) and the method's switches.

    ``global_size`` / ``local_size``: the crop sizes (``benchmarks/memory.py`` shrinks them for quick checks).
    """
    from cosmos.method import Objective, build_student
    from cosmos.teacher.ema import EMATeacher
    from cosmos.training.loop import Trainer
    from cosmos.training.optim import build_optimizer
    from cosmos.training.precision import Precision

    torch.manual_seed(0)
    switches = switches_for(method, global_size, local_size)
    student = build_student(model_config(width, layers), switches).to(device)
    teacher = EMATeacher(student) if switches.needs_teacher else None
    total = steps + 2  # warm-up + FLOP count + timed steps
    trainer = Trainer(
        student=student, teacher=teacher, objective=Objective(switches).to(device),
        loader=SimpleNamespace(batches_per_epoch=total, batch=0, world=1),
        optimizer=build_optimizer(student, lr=5e-4, weight_decay=0.5), precision=Precision(precision, device),
        lr=np.full(total, 5e-4), momentum=np.full(total, switches.momentum), placement=switches.ema_placement,
        epochs=1, name=method,
    )
    return trainer, switches


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_one(method: str, precision: str, device_name: str, steps: int, batch: int, width: int,
            layers: int) -> dict[str, Any]:
    """Benchmark one (method, precision) in this process: warm-up, FLOP count, ``steps`` timed steps."""
    from torch.utils.flop_counter import FlopCounterMode

    device = torch.device(device_name)
    trainer, switches = build_step(method, precision, device, width, layers, steps)
    data = synthetic_batch(switches, batch, 77, device)
    params = sum(p.numel() for p in trainer.student.parameters())
    trainer.train_step(data)  # warm-up (allocator, kernels, autocast caches)
    trainer.position.step += 1
    with FlopCounterMode(display=False) as counter:
        trainer.train_step(data)
    trainer.position.step += 1
    flops = counter.get_total_flops()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(data)
        trainer.position.step += 1
    _sync(device)
    seconds = (time.perf_counter() - start) / steps
    if device.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated(device) / 2**20
    else:  # ru_maxrss is in KiB on Linux
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"method": method, "precision": precision, "device": device_name, "batch": batch,
            "image_views": switches.num_image_views, "captions": switches.num_captions, "params_m": params / 1e6,
            "s_per_step": seconds, "samples_per_s": batch / seconds, "gflop_per_step": flops / 1e9,
            "achieved_gflops": flops / seconds / 1e9, "peak_mem_mib": peak_mib}


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """The best FLOP/s of an ``n x n @ n x n`` ``torch.mm`` in ``dtype`` on ``device`` (GFLOP/s)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def _child(args: argparse.Namespace, method: str, precision: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--_one", method, precision, "--device", args.device, "--steps",
           str(args.steps), "--threads", str(args.threads), "--batch", str(args.batch), "--width", str(args.width), "--layers", str(args.layers)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT)
    if proc.returncode:
        raise RuntimeError(f"{method}/{precision} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| method | precision | views (img/txt) | samples/s | s/step | GFLOP/step | achieved GFLOP/s "
            "| matmul peak GFLOP/s | FLOP util. | peak mem MiB |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['precision']} | {r['image_views']}/{r['captions']} "
                     f"| {r['samples_per_s']:.2f} | {r['s_per_step']:.3f} | {r['gflop_per_step']:.1f} "
                     f"| {r['achieved_gflops']:.1f} | {r['peak_gflops']:.0f} | {100 * r['utilisation']:.1f}% "
                     f"| {r['peak_mem_mib']:.0f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per run, after 1 warm-up + 1 counted")
    parser.add_argument("--precision", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch CPU threads; use the cores no other process is using (oversubscribed OpenMP "
                             "threads spin and slow every op several-fold)")
    parser.add_argument("--json", type=Path, help="also write the rows and the set-up here")
    parser.add_argument("--_one", nargs=2, metavar=("METHOD", "PRECISION"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args._one:
        print(json.dumps(run_one(*args._one, args.device, args.steps, args.batch, args.width, args.layers)))
        return
    device = torch.device(args.device)
    peaks = {p: matmul_peak(device, torch.float32 if p == "fp32" else torch.bfloat16) for p in args.precision}
    rows = []
    for method in args.methods:
        for precision in args.precision:
            row = _child(args, method, precision)
            row["peak_gflops"] = peaks[precision]
            row["utilisation"] = row["achieved_gflops"] / peaks[precision]
            rows.append(row)
            print(f"{method}/{precision}: {row['s_per_step']:.3f} s/step", file=sys.stderr, flush=True)
    setup = {"device": args.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
             "batch": args.batch, "width": args.width, "layers": args.layers, "steps": args.steps,
             "matmul_peak_gflops": peaks}
    print(f"device={args.device} threads={setup['threads']} torch={torch.__version__} batch={args.batch} "
          f"width={args.width} layers={args.layers} timed steps={args.steps}")
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"setup": setup, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
