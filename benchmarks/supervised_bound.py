"""Supervised upper bound of the synthetic object set: the tiny visual tower trained on shape labels.

A calibration script, not a test (docs/evaluation.md, "Calibrating the objects"). It answers: can the
CPU model's visual tower learn to tell the object classes apart from the default sample budget at all?
If labels cannot teach it, no caption can, and the object set measures nothing.

- Training: the first `--train` scenes of the pre-training split (the same generator streams as
  `write_pretrain_raw`, so the same images, JPEG round trip included), label = the dominant object's
  shape; a fresh `--model` visual tower + a linear head, cross-entropy, AdamW, linear warm-up + cosine,
  batch `--batch`, `--epochs` passes. Crops as CLIP's training (RandomResizedCrop scale (0.9, 1) to the
  model's input size), so the bound is for the augmentation CLIP sees.
- Evaluation: the object classification set exactly as `download` writes it (`sample_rng(seed,
  "classify", ...)`, `dominant_shape` forced), `--per-class` images a class, the evaluation transform.
- Output: top-1 per seed and the mean, each with a 95% bootstrap interval over the evaluation images.

    .venv/bin/python benchmarks/supervised_bound.py                       # the default world
    .venv/bin/python benchmarks/supervised_bound.py --surfaces flat       # silhouettes only (pre-issue-27)

Reads `data.generator` and `seed` from params.yaml; `--set key=value` overrides a generator key.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cosmos.augment.multicrop import eval_transform, single_crop_transform  # noqa: E402
from cosmos.data.images import decode_image, encode_jpeg  # noqa: E402
from cosmos.data.synthetic.scene import SceneConfig, sample_rng, sample_scene  # noqa: E402
from cosmos.models import build_model  # noqa: E402
from cosmos.models.configs import get_model_config  # noqa: E402


def _jpeg_roundtrip(image: np.ndarray):
    return decode_image(encode_jpeg(image))


def train_set(cfg: SceneConfig, seed: int, n: int) -> tuple[list, list[int]]:
    """The first `n` pre-training scenes (as JPEG-decoded PIL images) and their dominant shape's class."""
    shapes = sorted(cfg.shapes)
    images, labels = [], []
    for i in range(n):
        scene = sample_scene(sample_rng(seed, "train", i), cfg)
        images.append(_jpeg_roundtrip(scene.image))
        labels.append(shapes.index(scene.dominant.shape))
    return images, labels


def eval_set(cfg: SceneConfig, seed: int, per_class: int) -> tuple[list, list[int]]:
    """The object classification set as `write_classification` draws it."""
    shapes = sorted(cfg.shapes)
    images, labels = [], []
    for c, shape in enumerate(shapes):
        for j in range(per_class):
            scene = sample_scene(sample_rng(seed, "classify", c * per_class + j), cfg, dominant_shape=shape)
            images.append(_jpeg_roundtrip(scene.image))
            labels.append(c)
    return images, labels


def bootstrap_ci(correct: np.ndarray, n_boot: int = 2000) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    draws = correct[rng.integers(0, len(correct), size=(n_boot, len(correct)))].mean(axis=1)
    return float(np.percentile(draws, 2.5) * 100), float(np.percentile(draws, 97.5) * 100)


def train_and_eval(model_name: str, train: tuple[list, list[int]], test: tuple[list, list[int]], n_classes: int,
                   seed: int, batch: int, epochs: int, lr: float, weight_decay: float, warmup: int) -> np.ndarray:
    """Per-image correctness (0/1) of one supervised run on the evaluation images."""
    torch.manual_seed(seed)
    cfg = get_model_config(model_name)
    size = cfg["vision_cfg"]["image_size"]
    model = build_model(model_name, cross_attn=False)
    head = torch.nn.Linear(cfg["embed_dim"], n_classes)
    params = [p for n, p in model.named_parameters() if n.startswith("visual.")] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    crop, to_eval = single_crop_transform(size, scale=(0.9, 1.0)), eval_transform(size)
    images, labels = train
    steps = epochs * (len(images) // batch)
    gen = torch.Generator().manual_seed(seed)
    step = 0
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=gen).tolist()
        for b in range(len(images) // batch):
            idx = order[b * batch:(b + 1) * batch]
            x = torch.stack([crop(images[i]) for i in idx])
            y = torch.tensor([labels[i] for i in idx])
            scale = (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
            for g in opt.param_groups:
                g["lr"] = lr * scale
            loss = F.cross_entropy(head(model.encode_image(x, normalize=False)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    model.eval()
    correct = []
    with torch.no_grad():
        t_images, t_labels = test
        for b in range(0, len(t_images), 256):
            x = torch.stack([to_eval(im) for im in t_images[b:b + 256]])
            pred = head(model.encode_image(x, normalize=False)).argmax(-1)
            correct.extend((pred == torch.tensor(t_labels[b:b + 256])).tolist())
    return np.asarray(correct, dtype=np.float64)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--surfaces", choices=["patterned", "flat"], default=None, help="override data.generator.surfaces")
    ap.add_argument("--model", default="cosmos-tiny")
    ap.add_argument("--train", type=int, default=None, help="training scenes (default: data.sizes.train)")
    ap.add_argument("--per-class", type=int, default=None,
                    help="evaluation images a class (default: data.sizes.classification_per_class)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=0.5)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    params = yaml.safe_load(Path(args.params).read_text())
    gen = dict(params["data"]["generator"])
    if args.surfaces is not None:
        gen["surfaces"] = args.surfaces
    cfg = SceneConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in gen.items()})
    n_train = args.train or params["data"]["sizes"]["train"]
    per_class = args.per_class or params["data"]["sizes"]["classification_per_class"]
    t0 = time.time()
    train = train_set(cfg, params["seed"], n_train)
    test = eval_set(cfg, params["seed"], per_class)
    runs = []
    for seed in args.seeds:
        correct = train_and_eval(args.model, train, test, len(cfg.shapes), seed, args.batch, args.epochs, args.lr,
                                 args.weight_decay, args.warmup)
        lo, hi = bootstrap_ci(correct)
        runs.append({"seed": seed, "top1": correct.mean() * 100, "ci95": [lo, hi], "correct": correct})
        print(f"seed {seed}: top-1 {correct.mean() * 100:.1f} [{lo:.1f}, {hi:.1f}]", flush=True)
    pooled = np.mean([r["correct"] for r in runs], axis=0)
    lo, hi = bootstrap_ci(pooled)
    out = {
        "model": args.model, "surfaces": cfg.surfaces, "train_scenes": n_train, "epochs": args.epochs,
        "batch": args.batch, "lr": args.lr, "eval_images": len(test[1]), "chance": 100 / len(cfg.shapes),
        "seeds": [{k: v for k, v in r.items() if k != "correct"} for r in runs],
        "top1": float(pooled.mean() * 100), "ci95": [lo, hi], "seconds": round(time.time() - t0, 1),
    }
    print(f"{args.model}, {cfg.surfaces} surfaces, {n_train} scenes x {args.epochs} epoch(s): top-1 "
          f"{out['top1']:.1f} [{lo:.1f}, {hi:.1f}] over {len(test[1])} images (chance {out['chance']:.1f}), "
          f"{out['seconds']} s")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
