"""Peak memory and s/step against the per-device batch, with activation checkpointing and exact gradient
accumulation on and off (a script, not a test).

Two switches trade compute for activation memory without changing the objective:

- ``model.grad_checkpointing`` keeps only each transformer block's input for backward and recomputes the block
  there (``torch.utils.checkpoint``, non-reentrant): the activations held during backward shrink from every
  block's intermediates to one input per block plus one block's intermediates, for one more forward of the
  blocks (about a third more compute);
- ``train.accum_steps = n`` runs the step in ``n`` micro-batches of ``m = B / n`` samples by gradient caching
  (:mod:`cosmos.training.accumulation`): the activations are those of one micro-batch, plus the cached
  features of the whole batch and their gradients, for one more student forward. Unlike summing micro-batch
  gradients it keeps COSMOS's batch-wide objective exact.

For each per-device batch ``B`` (``--batches``) and method (``--methods``, COSMOS by default) a child process
per variant (plain; checkpointing; accumulation ``n`` for each ``--accum`` value; checkpointing with each
accumulation) builds the model with seed 0, the same synthetic batch, and runs the library's own
:meth:`cosmos.training.loop.Trainer.train_step` (objective -> backward -> EMA -> AdamW): one warm-up step
(step 0, whose loss is reported as ``loss0``: the same weights and batch give the same loss whatever the
switches, which the table shows to round-off) and ``--steps`` timed steps, whose median is the s/step.

Memory is measured in the child, so each variant's peak is its own:

- CPU: ``total`` is the peak resident set (``VmHWM``; the high-water mark is reset through
  ``/proc/self/clear_refs`` after set-up where Linux allows it, else ``ru_maxrss``), which includes the
  interpreter, the torch libraries and the weights; ``step`` is that peak minus the resident set once the
  model, EMA teacher, optimizer and batch are built, i.e. what the steps add: activations, gradients, the
  AdamW moments (created by the first step) and allocator slack. The gradients and moments (3 x the
  student's parameter bytes) are the same in every variant, so ratios of ``step`` understate the activation
  saving; the ``params MiB`` line of the set-up gives that floor;
- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` at the end of set-up (``total``),
  minus ``torch.cuda.memory_allocated`` then (``step``); timings synchronise the device.

Model: ViT-B/16 proportions narrowed for a 2-core CPU (``benchmarks/train_step.py``'s ``model_config``:
patch 16 at 224 px, heads of 64, context 77, the CLIP vocabulary), width 256 and 4 layers by default, the
same model as ``train_step.py`` so the two tables can be read together (depth matters to checkpointing:
with L blocks it keeps L block inputs instead of L blocks' intermediates, so a deeper model saves a larger
share; ``--layers 12`` keeps ViT-B's depth at about three times the run time). COSMOS's
``conf/distill/cosmos.yaml`` switches at 224 / 96 px crops (2 global + 6 local crops, 8 captions);
``--global-size`` / ``--local-size`` shrink the crops for quick checks. The defaults (batches 4, 8, 16;
accumulation 2 and 4; 3 timed steps; fp32) take about 5-6 minutes on a quiet 2-core CPU with
``--threads 2``.

Usage::

    python benchmarks/memory.py --device cpu --threads 2 --json /tmp/memory.json --markdown /tmp/memory.md
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: make ``benchmarks`` and ``cosmos`` importable
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.train_step import METHODS, _sync, build_step, synthetic_batch  # noqa: E402

PRECISIONS = ("fp32", "bf16")


def variants(batch: int, accums: list[int], checkpointing: bool = True) -> list[tuple[int, bool]]:
    """``(accum_steps, grad_ckpt)`` pairs for one batch: plain first, then checkpointing, each accumulation that
    divides ``batch``, and checkpointing with each of them."""
    steps = [1] + [n for n in accums if n > 1 and batch % n == 0]
    return [(n, ckpt) for ckpt in ((False, True) if checkpointing else (False,)) for n in steps]


# ------------------------------------------------------------------------------------------------ memory


def _status_kib(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark (Linux >= 4.0), so the peak is the steps' own: set-up
    (imports, model building) must not hide a smaller step peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_mib() -> float:
    kib = _status_kib("VmRSS")
    return (kib if kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def _peak_rss_mib() -> float:
    kib = _status_kib("VmHWM")
    return (kib if kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024  # KiB on Linux


# ------------------------------------------------------------------------------------------------- child


def run_one(method: str, batch: int, accum: int, ckpt: bool, *, device_name: str, precision: str, steps: int,
            width: int, layers: int, global_size: int, local_size: int) -> dict[str, Any]:
    """One variant in this process: set-up, baseline memory, warm-up step 0 (``loss0``), ``steps`` timed steps."""
    from cosmos.training.accumulation import GradCache

    device = torch.device(device_name)
    trainer, switches = build_step(method, precision, device, width, layers, steps,
                                   global_size=global_size, local_size=local_size)
    if ckpt:
        trainer.student.set_grad_checkpointing(True)  # as build_trainer does for model.grad_checkpointing
    if accum > 1:
        trainer.accumulation = GradCache(accum)
    data = synthetic_batch(switches, batch, 77, device)
    params = sum(p.numel() * p.element_size() for p in trainer.student.parameters())

    _sync(device)
    if device.type == "cuda":
        base = torch.cuda.memory_allocated(device) / 2**20
        torch.cuda.reset_peak_memory_stats(device)
        reset = True
    else:
        reset = _reset_peak_rss()
        base = _rss_mib()

    loss0 = trainer.train_step(data)["loss"]  # step 0: also the warm-up (allocator, kernels, AdamW moments)
    trainer.position.step += 1
    times = []
    for _ in range(steps):
        _sync(device)
        start = time.perf_counter()
        trainer.train_step(data)  # reads the loss back: one host sync per step, as at log_every=1
        _sync(device)
        times.append(time.perf_counter() - start)
        trainer.position.step += 1
    seconds = statistics.median(times)  # a shared machine's stalls hit single steps: the median ignores them

    total = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _peak_rss_mib()
    return {"method": method, "device": device_name, "precision": precision, "batch": batch, "accum_steps": accum,
            "micro_batch": batch // accum, "grad_ckpt": ckpt, "loss0": loss0, "s_per_step": seconds,
            "samples_per_s": batch / seconds, "step_times": times, "base_mib": base, "step_peak_mib": total - base,
            "total_peak_mib": total, "peak_reset": reset, "params_mib": params / 2**20,
            "image_views": switches.num_image_views, "captions": switches.num_captions}


def _child(args: argparse.Namespace, method: str, batch: int, accum: int, ckpt: bool) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--_one", method, str(batch), str(accum), str(int(ckpt)),
           "--device", args.device, "--precision", args.precision, "--steps", str(args.steps),
           "--threads", str(args.threads), "--width", str(args.width), "--layers", str(args.layers),
           "--global-size", str(args.global_size), "--local-size", str(args.local_size)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT)
    if proc.returncode:
        raise RuntimeError(f"{method} batch={batch} accum={accum} ckpt={ckpt} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ parent


def add_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``step_ratio``: the step peak over the plain run's (same method and batch); ``loss0_diff``: |loss0 - plain's|."""
    plain = {(r["method"], r["batch"]): r for r in rows if r["accum_steps"] == 1 and not r["grad_ckpt"]}
    for r in rows:
        ref = plain.get((r["method"], r["batch"]))
        r["step_ratio"] = r["step_peak_mib"] / ref["step_peak_mib"] if ref and ref["step_peak_mib"] > 0 else math.nan
        r["loss0_diff"] = abs(r["loss0"] - ref["loss0"]) if ref else math.nan
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| method | batch | accum_steps | micro-batch | grad_ckpt | s/step | samples/s | step peak MiB "
            "| total peak MiB | step peak / plain | loss0 |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(f"| {r['method']} | {r['batch']} | {r['accum_steps']} | {r['micro_batch']} "
                     f"| {'on' if r['grad_ckpt'] else 'off'} | {r['s_per_step']:.3f} | {r['samples_per_s']:.2f} "
                     f"| {r['step_peak_mib']:.0f} | {r['total_peak_mib']:.0f} | {r['step_ratio']:.2f} "
                     f"| {r['loss0']:.6f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="fp32 by default: bf16 autocast keeps fp32 weights and caches casts, so its memory "
                             "depends on the autocast cache as well as on the switches")
    parser.add_argument("--methods", nargs="+", default=["cosmos"], choices=METHODS)
    parser.add_argument("--batches", nargs="+", type=int, default=[4, 8, 16], help="per-device batches")
    parser.add_argument("--accum", nargs="+", type=int, default=[2, 4],
                        help="train.accum_steps values (>1) to run; those that do not divide a batch are skipped")
    parser.add_argument("--no-ckpt", action="store_true", help="leave out the grad_checkpointing variants")
    parser.add_argument("--steps", type=int, default=3,
                        help="timed steps per variant, after the warm-up step 0; s/step is their median")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--global-size", type=int, default=224, help="global crop size (px)")
    parser.add_argument("--local-size", type=int, default=96, help="local crop size (px)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch CPU threads; the cores no other process is using (benchmarks/README.md)")
    parser.add_argument("--json", type=Path, help="also write the rows and the set-up here")
    parser.add_argument("--markdown", type=Path, help="also write the set-up line and the table here")
    parser.add_argument("--_one", nargs=4, metavar=("METHOD", "BATCH", "ACCUM", "CKPT"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args._one:
        method, batch, accum, ckpt = args._one
        print(json.dumps(run_one(method, int(batch), int(accum), bool(int(ckpt)), device_name=args.device,
                                 precision=args.precision, steps=args.steps, width=args.width, layers=args.layers,
                                 global_size=args.global_size, local_size=args.local_size)))
        return
    start = time.perf_counter()
    rows = []
    for method in args.methods:
        for batch in args.batches:
            for accum, ckpt in variants(batch, args.accum, not args.no_ckpt):
                row = _child(args, method, batch, accum, ckpt)
                rows.append(row)
                print(f"{method} batch={batch} accum={accum} ckpt={ckpt}: {row['s_per_step']:.3f} s/step, "
                      f"step peak {row['step_peak_mib']:.0f} MiB", file=sys.stderr, flush=True)
    add_ratios(rows)
    setup = {"device": args.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
             "precision": args.precision, "width": args.width, "layers": args.layers, "steps": args.steps,
             "global_size": args.global_size, "local_size": args.local_size,
             "params_mib": rows[0]["params_mib"] if rows else None, "wall_s": time.perf_counter() - start}
    line = (f"device={args.device} threads={setup['threads']} torch={torch.__version__} precision={args.precision} "
            f"width={args.width} layers={args.layers} crops={args.global_size}/{args.local_size} px "
            f"timed steps={args.steps} student params={setup['params_mib']:.0f} MiB "
            f"wall={setup['wall_s']:.0f} s")
    print(line)
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"setup": setup, "rows": rows}, indent=2) + "\n")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(f"`{line}`\n\n{table(rows)}\n")


if __name__ == "__main__":
    main()
