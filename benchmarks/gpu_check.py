"""Does COSMOS training work on this GPU, and how fast? One command, at most 10 minutes on one H100 (issue 26).

Run on a machine with one GPU (a script, not a test)::

    python benchmarks/gpu_check.py --out runs/gpu_check            # about 5-8 minutes on one H100
    python benchmarks/gpu_check.py --reference-src ../cosmos-ref --time-budget-s 600   # + the side-by-side ratio

and expect ``runs/gpu_check/gpu_check.json`` and ``gpu_check.md``: one row per section with pass / fail /
skipped and its numbers, the environment (GPU, driver, CUDA, torch, git revision), and exit status 0 when no
check failed (1 otherwise). On an H100 the throughput table should show ViT-B/16 COSMOS (2 x 224 + 6 x 96 px
crops, 8 captions, bf16) running at batch 64 and 128 without activation checkpointing and, probably, out of
memory at 256 without it (recorded as "OOM", not a failure); with checkpointing all three batches should fit.
Without a GPU (``--device cpu``, or no CUDA) the script runs the same sections in the reduced mode the test
suite uses (``cosmos-tiny``, batch 4, 2 loader workers; tests/benchmarks/test_gpu_check.py), about a minute.

Sections, in this order (the most informative first), each checking the time left (``--time-budget-s``, default
540 s) against its own estimate and recording "skipped (time budget)" rather than running over; a failing
section records its exception and the run goes on:

1. placement: every parameter, buffer and optimizer state tensor (after one step) of the student, the EMA
   teacher and the objective (SiLC's DINO centre) on the device;
2. precision: step-0 loss terms in fp32 / bf16 / fp16 (fp16 on CUDA only) within 2e-2 relative of fp32;
3. learning: 20 bf16 steps on one repeated batch, last loss < 0.8 x first;
4. gradscaler (CUDA): fp16 over 20 steps, the loss scale finite and > 1, at most 3 skipped steps;
5. throughput: s/step, samples/s, MFU and peak memory of ViT-B/16 COSMOS at batch 64 / 128 / 256, activation
   checkpointing off and on, 2 warm-up + 1 FLOP-counted + 5 timed steps, up to the first OOM;
6. ddp: one step of a 1-rank DDP trainer (NCCL; gloo on CPU) equals the plain trainer's, for clip, silc, cosmos;
7. checkpoint: saved at step 1 and resumed in a new trainer, step 2 equals continuing;
8. accumulation: ``train.accum_steps`` (GradCache) gives the full batch's loss and gradients (fp32, TF32 off);
9. host_syncs (CUDA): 3 ``Trainer.step_on_device`` calls under ``torch.cuda.set_sync_debug_mode("warn")``, bf16
   and fp16 (GradScaler, fused AdamW), ``train.accum_steps`` 1 and 2: every synchronizing call with its Python
   stack, none allowed in the project's code (on CPU: tests/training/test_no_host_sync.py);
10. loader: loader batches/s with 8 workers on synthetic 224-px shards against the training samples/s;
11. evaluation: ``encode_image`` images/s on the device, and end to end through ``embed_images``;
12. side_by_side (with ``--reference-src``): ``benchmarks/side_by_side.py``'s ratio, reference s/step / project
    s/step, and the step-0 loss difference: on the GPU ViT-B/16 at batch 128, bf16 and fp16, 1 warm-up + 3 timed
    steps per child process (about 2-2.5 minutes, so it needs ``--time-budget-s 600``, or a run of its own:
    ``--sections side_by_side``; an OOM of either side is recorded); in reduced mode its CPU model at batch 8,
    fp32 and bf16.

Correctness sections use ViT-B/16 at batch 16 (the full mode) with the ``conf/distill`` switches at 224 / 96 px
crops; the synthetic data (``cosmos.data.synthetic``, ``params.yaml`` ``data.generator`` at 224 px) is written
into a temporary folder, the loader's larger set by a child process while the GPU sections run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch
import yaml

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))
import gpu_check_sections as checks  # noqa: E402

REPO_ROOT = BENCH.parent
ORDER = list(checks.SECTIONS)


def scene_config(image_size: int):
    """``params.yaml`` ``data.generator`` with ``image_size`` replaced (the generator draws at any size >= 32)."""
    from cosmos.data.synthetic.scene import SceneConfig

    generator = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())["data"]["generator"]
    generator = {k: tuple(v) if isinstance(v, list) else v for k, v in generator.items()}
    return SceneConfig(**{**generator, "image_size": image_size})


def write_shards(root: Path, image_size: int, samples: int) -> Path:
    """Synthetic pre-training scenes -> training shards under ``root/shards`` (as tests/conftest.py's fixtures)."""
    from cosmos.data.shard import shard_dataset
    from cosmos.data.synthetic.write_pretrain import write_pretrain_raw

    raw = root / "raw"
    write_pretrain_raw(raw, 0, scene_config(image_size), samples, samples_per_tar=256)
    shard_dataset(raw / "images", raw / "annotations.csv", root / "shards", samples_per_shard=max(8, samples // 16))
    return root / "shards"


def _write_data(root: str, image_size: int, samples: int, eval_images: int) -> None:
    from cosmos.data.synthetic.write_benchmarks import write_retrieval

    write_shards(Path(root), image_size, samples)
    write_retrieval(Path(root) / "coco", 0, scene_config(image_size), eval_images)


class BackgroundData:
    """The loader's shards and the evaluation images, written by a forked child while the GPU sections run."""

    def __init__(self, root: Path, image_size: int, samples: int, eval_images: int):
        self.root, self.image_size, self.samples, self.eval_images = root, image_size, samples, eval_images
        self.proc = mp.get_context("fork").Process(target=_write_data, daemon=True,
                                                   args=(str(root), image_size, samples, eval_images))
        self.proc.start()

    def _wait(self) -> None:
        self.proc.join()
        if self.proc.exitcode != 0:
            raise RuntimeError(f"writing the synthetic data failed (child exit {self.proc.exitcode}; its traceback "
                               "is on stderr)")

    def wait_shards(self) -> Path:
        self._wait()
        return self.root / "shards"

    def wait_eval_images(self) -> list[Path]:
        self._wait()
        return sorted((self.root / "coco").rglob("*.jpg"))

    def stop(self) -> None:
        if self.proc.is_alive():
            self.proc.terminate()
        self.proc.join()


def resolve_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: CUDA is not available (torch "
                             f"{torch.__version__}, CUDA build {torch.version.cuda})")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def environment(device: torch.device) -> dict[str, Any]:
    from cosmos.io.provenance import git_revision, package_versions

    env: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "cuda_build": torch.version.cuda,
                           "python": sys.version.split()[0], "platform": platform.platform(),
                           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                           "git": git_revision(REPO_ROOT), "packages": package_versions()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        nccl = torch.cuda.nccl.version()  # a tuple in recent torch, an int in older ones
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   compute_capability=f"{props.major}.{props.minor}", gpus_visible=torch.cuda.device_count(),
                   cudnn=torch.backends.cudnn.version(),
                   nccl=".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl))
        try:
            env["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", f"--id={device.index}"],
                capture_output=True, text=True, timeout=20, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError) as err:
            env["driver"] = f"unknown ({type(err).__name__})"
    else:
        env["cpu"] = platform.processor() or platform.machine()
    return env


# ------------------------------------------------------------------------------------------------ report


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "-"
    return str(value).replace("|", "/")


def _table(rows: list[dict[str, Any]]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_cell(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def markdown(report: dict[str, Any]) -> str:
    env, mode = report["environment"], report["mode"]
    where = (f"{env['gpu']} ({env['gpu_memory_gib']} GiB, driver {env['driver']}, CUDA {env['cuda_build']})"
             if "gpu" in env else f"CPU ({env['cpu']}, {env['cpu_count']} cores, {env['torch_threads']} torch threads)")
    git = env["git"]
    lines = [f"# GPU check: {where}", "",
             f"torch {env['torch']}, git {git['commit'][:12]}{' (dirty)' if git.get('dirty') else ''}, "
             f"{mode['profile']} mode, {mode['seconds']:.0f} s of a {mode['time_budget_s']:.0f} s budget; "
             f"**{'all checks passed' if report['ok'] else 'FAILED: ' + ', '.join(report['failed'])}**", "",
             "| section | status | result | criterion | s |", "|---|---|---|---|---|"]
    for name, sec in report["sections"].items():
        result = sec.get("summary") or sec.get("reason") or ""
        lines.append(f"| {name} | {sec['status']} | {_cell(result)} | {_cell(sec.get('criterion', ''))} "
                     f"| {sec.get('seconds', 0):.1f} |")
    for name, sec in report["sections"].items():
        if sec.get("rows"):
            lines += ["", f"## {name}", "", _table(sec["rows"])]
            notes = {k: v for k, v in sec.get("numbers", {}).items() if isinstance(v, str)}
            lines += [""] + [f"- {k}: {v}" for k, v in notes.items()] if notes else []
    return "\n".join(lines) + "\n"


def write_report(out: Path, report: dict[str, Any]) -> None:
    failed = [n for n, s in report["sections"].items() if s["status"] in ("fail", "error")]
    report.update(ok=not failed, failed=failed)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "gpu_check.md").write_text(markdown(report))


# -------------------------------------------------------------------------------------------------- main


def run_section(name: str, ctx: checks.Ctx) -> dict[str, Any]:
    estimate = checks.ESTIMATE_S[name][ctx.prof.name == "reduced"]
    if ctx.remaining() < estimate:
        return {"status": "skipped", "reason": f"skipped (time budget): {ctx.remaining():.0f} s left, the section "
                                               f"needs about {estimate} s"}
    start = time.perf_counter()
    try:
        result = checks.SECTIONS[name](ctx)
        section = {"status": "pass" if result.pop("passed") else "fail", **result}
    except checks.Skip as skip:
        section = {"status": "skipped", "reason": str(skip)}
    except Exception as err:  # recorded; the next section runs
        section = {"status": "error", "reason": f"{type(err).__name__}: {err}"[:2000],
                   "traceback": traceback.format_exc()[-4000:]}
    section["seconds"] = time.perf_counter() - start
    checks.free_memory(ctx.device)
    return section


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--reduced", action="store_true", help="tiny model and batches (implied on CPU)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "gpu_check",
                        help="folder of gpu_check.json and gpu_check.md")
    parser.add_argument("--reference-src", type=Path, help="a checkout of ExplainableML/cosmos (section side_by_side)")
    parser.add_argument("--time-budget-s", type=float, default=540.0)
    parser.add_argument("--sections", nargs="+", choices=ORDER, default=ORDER, help="run only these")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    prof = checks.REDUCED if args.reduced or device.type == "cpu" else checks.FULL
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "environment": environment(device),
        "mode": {"profile": prof.name, "device": str(device), "time_budget_s": args.time_budget_s,
                 "reference_src": str(args.reference_src) if args.reference_src else None, "seconds": 0.0},
        "sections": {},
    }
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        work = Path(tmp)
        data = BackgroundData(work / "loader-data", prof.image_size, prof.loader_samples, prof.eval_images)
        try:
            ctx = checks.Ctx(device=device, prof=prof, work=work,
                             check_shards=write_shards(work / "check-data", prof.image_size, prof.check_samples),
                             data=data, deadline=start + args.time_budget_s, reference_src=args.reference_src)
            for name in ORDER:
                if name not in args.sections:
                    continue
                print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
                section = run_section(name, ctx)
                ctx.results[name] = section
                report["sections"][name] = section
                report["mode"]["seconds"] = time.perf_counter() - start
                write_report(args.out, report)  # after every section: a killed run keeps what it measured
                print(f"gpu_check: {name}: {section['status']} "
                      f"{section.get('summary') or section.get('reason', '')}", file=sys.stderr, flush=True)
        finally:
            data.stop()
            for child in mp.active_children():  # e.g. loader workers of a failed section: they ignore SIGTERM
                child.kill()
                child.join()
    report["mode"]["seconds"] = time.perf_counter() - start
    write_report(args.out, report)
    print(markdown(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
