"""What the ``eval_*`` DVC stages run: typed config, model loading, metrics, per-class CSVs and pictures.

Each ``run_*`` function takes the ``eval`` params section (``conf/eval/*.yaml``) and an output folder, writes
its tables and pictures there, and returns the metrics dict the stage saves as
``reports/metrics/eval_<task>.json``: ``{"source": ..., "chance": ..., "<label>": {...}}`` with one entry per
evaluated weight set (``student``, ``teacher`` or ``openclip``).

Settings of the ``eval`` section read here, besides each task's own: ``device`` (``auto`` | ``cpu`` | ``cuda``,
:mod:`cosmos.eval.device`), ``batch_size`` (images per forward), ``text_batch_size`` (captions and prompts per
forward), ``segmentation.batch_images`` / ``segmentation.window_batch`` (sliding windows per forward) and
``launcher`` (:mod:`cosmos.eval.launch`: overrides of the ``launcher`` section for the evaluation job).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cosmos.eval import classification as cls_eval
from cosmos.eval import compositional, retrieval, segmentation
from cosmos.eval.device import resolve_device
from cosmos.eval.launch import eval_launcher, run_evaluation
from cosmos.eval.pictures import save_cross_attention_figure, save_segmentation_grid
from cosmos.eval.seg_datasets import read_benchmark
from cosmos.eval.sources import EvalModel, load_eval_models, resolve_checkpoint
from cosmos.io.atomic import atomic_write_text
from cosmos.report.intervals import ItemScores

__all__ = ["models_for", "run_retrieval", "run_classification", "run_segmentation", "run_compositional",
           "write_csv", "items_path", "read_retrieval_set", "retrieval_chance", "segmentation_chance",
           "eval_device", "batch_sizes", "evaluate_into", "stage_main", "EVAL_LOGS"]


# One stage runs several evaluations of the same weights (ablation_eval: all four); load them once.
_LOADED: dict[str, dict[str, EvalModel]] = {}


def eval_device(cfg: dict[str, Any]) -> torch.device:
    """``eval.device`` resolved here (``auto`` when the key is absent, as in configs older than the key)."""
    return resolve_device(cfg.get("device", "auto"))


def batch_sizes(cfg: dict[str, Any]) -> tuple[int, int]:
    """``(images, texts)`` per forward: ``eval.batch_size`` and ``eval.text_batch_size`` (default 256)."""
    sizes = {"batch_size": cfg["batch_size"], "text_batch_size": cfg.get("text_batch_size", 256)}
    for key, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"eval.{key}={value!r} must be an integer >= 1")
    return sizes["batch_size"], sizes["text_batch_size"]


def models_for(cfg: dict[str, Any], model_name: str, weights: str | None = None) -> dict[str, EvalModel]:
    """The models of ``cfg["source"]`` on :func:`eval_device`, loaded once per process for the same source,
    file state, weights and device."""
    source, weights, device = cfg["source"], weights or cfg["weights"], eval_device(cfg)
    stamp = None
    if source.get("kind") == "checkpoint":
        path = resolve_checkpoint(source["path"])
        stat = path.stat()
        stamp = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    key = json.dumps([source, model_name, weights, stamp, str(device)], sort_keys=True, default=str)
    if key not in _LOADED:
        while len(_LOADED) >= 2:  # e.g. "both" and segmentation's "teacher" of one checkpoint
            del _LOADED[next(iter(_LOADED))]
        _LOADED[key] = load_eval_models(source, model_name=model_name, weights=weights, device=device)
    return _LOADED[key]


def _source_info(cfg: dict[str, Any], models: dict[str, EvalModel]) -> dict[str, Any]:
    return {**cfg["source"], "evaluated": list(models)}


def write_csv(path: str | Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_retrieval_set(rcfg: dict[str, Any]):
    """``retrieval.format``: ``coco`` (root folder), ``karpathy`` or ``flickr`` (json path)."""
    fmt = rcfg["format"]
    if fmt == "coco":
        return retrieval.read_coco_captions(rcfg["root"])
    if fmt == "karpathy":
        return retrieval.read_karpathy_json(rcfg["root"], rcfg["image_root"], rcfg.get("split") or "test")
    if fmt == "flickr":
        return retrieval.read_flickr_json(rcfg["root"], rcfg.get("image_root"))
    raise ValueError(f"eval.retrieval.format must be coco, karpathy or flickr, got {fmt!r}")


def retrieval_chance(caption_to_image: list[int], ks=retrieval.RECALL_KS) -> dict[str, float]:
    """Expected R@K (percent) of a random ranking: T2I K/N_img; I2T 1 - P(no GT caption in the top K)."""
    n_img, n_txt = max(caption_to_image) + 1, len(caption_to_image)
    per_image = np.bincount(caption_to_image, minlength=n_img)
    out = {}
    for k in ks:
        out[f"text_to_image_R@{k}"] = 100.0 * min(k / n_img, 1.0)
        miss = [np.prod([(n_txt - g - j) / (n_txt - j) for j in range(min(k, n_txt))]) for g in per_image]
        out[f"image_to_text_R@{k}"] = 100.0 * float(1 - np.mean(miss))
    return out


def _merge(items: dict[str, ItemScores] | None, prefix: str, got: dict[str, ItemScores]) -> None:
    """Move an evaluator's item scores into ``items`` under their dotted metric path ``prefix.<name>``."""
    if items is not None:
        items.update({f"{prefix}.{k}": v for k, v in got.items()})


def run_retrieval(cfg: dict[str, Any], model_name: str, out_dir: Path,
                  items: dict[str, ItemScores] | None = None) -> dict[str, Any]:
    """``items``, when given, receives per-item scores under the metric paths of the result (every run_*)."""
    data = read_retrieval_set(cfg["retrieval"])
    image_batch, text_batch = batch_sizes(cfg)
    models = models_for(cfg, model_name)
    result: dict[str, Any] = {"source": _source_info(cfg, models), "chance": retrieval_chance(data.caption_to_image)}
    n_pics = int(cfg["pictures"]["cross_attention"])
    first_caption = {}
    for t, owner in enumerate(data.caption_to_image):
        first_caption.setdefault(owner, data.captions[t])
    for label, em in models.items():
        got: dict[str, ItemScores] = {}
        result[label] = retrieval.evaluate_retrieval(em, data, image_batch, got, text_batch)
        _merge(items, label, got)
        if n_pics and em.is_cosmos:
            pairs = [(data.image_paths[i], first_caption[i]) for i in range(min(n_pics, len(data.image_paths)))]
            save_cross_attention_figure(em, pairs, out_dir / f"cross_attention_{label}.png")
    return result


def _classification_meta(ccfg: dict[str, Any]) -> tuple[list[str] | None, list[str]]:
    names = None if ccfg["classnames"] == "imagenet" else cls_eval.read_classnames(ccfg["classnames"])
    if ccfg["classnames"] == "imagenet" or ccfg["templates"] == "openai":
        inet_names, openai = cls_eval.imagenet_metadata()
        names = inet_names if names is None else names
    templates = openai if ccfg["templates"] == "openai" else cls_eval.read_templates(ccfg["templates"])
    return names, templates


def run_classification(cfg: dict[str, Any], model_name: str, out_dir: Path,
                       items: dict[str, ItemScores] | None = None) -> dict[str, Any]:
    """Every set in ``classification.datasets``: ``{source, chance: {set: {top1, top5}}, <weights>: {set: metrics}}``
    (the layout of :func:`run_segmentation`), plus ``<weights>_<set>_per_class.csv`` in ``out_dir``."""
    # A set switched off with `-S eval.classification.datasets.<name>=null` is skipped.
    datasets = {k: v for k, v in (cfg["classification"]["datasets"] or {}).items() if v is not None}
    if not datasets:
        raise ValueError("eval.classification.datasets names no set: give at least one "
                         "{root, classnames, templates} entry (see conf/eval/synthetic.yaml)")
    image_batch, text_batch = batch_sizes(cfg)
    models = models_for(cfg, model_name)
    result: dict[str, Any] = {"source": _source_info(cfg, models), "chance": {}}
    for name, ccfg in datasets.items():
        data = cls_eval.read_image_folder(ccfg["root"])
        classnames, templates = _classification_meta(ccfg)
        n = len(classnames)
        result["chance"][name] = {"top1": 100.0 / n, "top5": 100.0 * min(5, n) / n}
        for label, em in models.items():
            got: dict[str, ItemScores] = {}
            metrics, rows = cls_eval.evaluate_classification(em, data, classnames, templates, image_batch, got,
                                                             text_batch)
            _merge(items, f"{label}.{name}", got)
            result.setdefault(label, {})[name] = {**metrics, "templates": len(templates)}
            write_csv(out_dir / f"{label}_{name}_per_class.csv", rows)
    return result


def segmentation_chance(gt_pixels: np.ndarray) -> float:
    """Expected mIoU (percent) of a uniformly random per-pixel prediction, given per-class GT pixel counts.

    E[cm[g, p]] = n_g / C, so IoU_c = (n_c / C) / (n_c + N / C - n_c / C); absent classes are NaN (excluded).
    """
    n = gt_pixels.astype(np.float64)
    c = len(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = (n / c) / (n + n.sum() / c - n / c)
    iou[n == 0] = np.nan
    return float(100 * np.nanmean(iou))


def run_segmentation(cfg: dict[str, Any], model_name: str, out_dir: Path,
                     items: dict[str, ItemScores] | None = None) -> dict[str, Any]:
    scfg = cfg["segmentation"]
    text_batch = batch_sizes(cfg)[1]
    models = models_for(cfg, model_name, scfg["weights"])
    templates = cls_eval.imagenet_metadata()[1] if scfg["templates"] == "openai" else cls_eval.read_templates(scfg["templates"])
    result: dict[str, Any] = {"source": _source_info(cfg, models), "chance": {}}
    for bench, bcfg in scfg["benchmarks"].items():
        bcfg = dict(bcfg)
        data = read_benchmark(bench, bcfg.pop("root"), split=bcfg.pop("split", "val"),
                              class_file=bcfg.pop("class_file", None), **bcfg)
        for label, em in models.items():
            got: dict[str, ItemScores] = {}
            metrics, rows, examples = segmentation.evaluate_segmentation(
                em, data, templates, csa=scfg["csa"], keep_examples=int(scfg["pictures"]),
                batch_images=int(scfg.get("batch_images", 16)), window_batch=scfg.get("window_batch"),
                text_batch_size=text_batch, items=got)
            _merge(items, f"{label}.{bench}", got)
            result.setdefault(label, {})[bench] = metrics
            write_csv(out_dir / f"{label}_{bench}_per_class.csv", rows)
            result["chance"][bench] = segmentation_chance(np.array([r["gt_pixels"] for r in rows]))
            if examples:
                save_segmentation_grid(examples, data.class_names, out_dir / f"{label}_{bench}_overlays.png",
                                       f"{bench} ({label}, CSA={scfg['csa']}): mIoU {metrics['mIoU']:.1f}")
    return result


def run_compositional(cfg: dict[str, Any], model_name: str, out_dir: Path,
                      items: dict[str, ItemScores] | None = None) -> dict[str, Any]:
    """SugarCrepe ``types`` (their ``mean`` is the headline) and, under ``suppression``, the
    feature-suppression probes ``suppression`` lists (``cosmos/data/synthetic/probes.py``) and their gaps."""
    pcfg = cfg["compositional"]
    image_batch, text_batch = batch_sizes(cfg)
    models = models_for(cfg, model_name)
    types, probes = list(pcfg["types"]), list(pcfg.get("suppression") or [])
    chance: dict[str, Any] = {t: 50.0 for t in [*types, "mean"]}
    if probes:
        chance["suppression"] = {**{t: 50.0 for t in probes}, **{g: 0.0 for g in compositional.suppression_gaps(probes)}}
    result: dict[str, Any] = {"source": _source_info(cfg, models), "chance": chance}
    for label, em in models.items():
        got: dict[str, ItemScores] = {}
        result[label] = compositional.evaluate_compositional(em, pcfg["root"], types, pcfg["image_dir"],
                                                             image_batch, got, suppression=probes,
                                                             text_batch_size=text_batch)
        _merge(items, label, got)
    return result


ITEMS_ROOT = Path("runs/items")


def items_path(run: str, task: str) -> Path:
    """Per-item scores of one evaluation (``cosmos.report.intervals``): ``runs/items/<run>/<task>.npz``;
    ``run`` is ``base`` for the ``eval_*`` stages, else the ablation run name."""
    return ITEMS_ROOT / run / f"{task}.npz"


# Job logs of the eval_* stages: runs/eval/submitit/<task>/<job id>/, beside (never inside) the DVC outs
# runs/eval/<task>, which the stage swaps in whole and DVC hashes whole.
EVAL_LOGS = Path("runs/eval/submitit")


def evaluate_into(fn, cfg: dict[str, Any], model_name: str,
                  out_dir: str) -> tuple[dict[str, Any], dict[str, ItemScores]]:
    """``fn`` (a ``run_*``) with its tables and pictures in ``out_dir``: ``(metrics, per-item scores)``; what an
    evaluation job runs and returns."""
    items: dict[str, ItemScores] = {}
    metrics = fn(cfg, model_name, Path(out_dir), items)
    return metrics, items


def stage_main(params: dict[str, Any], task: str, fn) -> dict[str, Any]:
    """Body of stage ``eval_<task>``: run ``fn`` into ``runs/eval/<task>`` (atomic folder swap), write
    ``run_info.json`` there, the metrics to ``reports/metrics/eval_<task>.json`` and the per-item scores
    to :func:`items_path` ``("base", task)``.

    ``fn`` runs in this process, or in a job when ``launcher`` (with ``eval.launcher`` over it) submits jobs
    (:mod:`cosmos.eval.launch`); then the job writes the tables and pictures into the temporary folder and
    everything else is written here, after the job succeeded.
    """
    from cosmos.io.atomic import atomic_dir, atomic_write_bytes, atomic_write_json
    from cosmos.io.provenance import write_run_info
    from cosmos.report.intervals import items_npz

    cfg = params["eval"]
    launcher = eval_launcher(params.get("launcher"), cfg.get("launcher"), job_name=f"cosmos-eval-{task}")
    with atomic_dir(Path("runs/eval") / task) as tmp:
        kwargs = {"fn": fn, "cfg": cfg, "model_name": params["model"]["name"], "out_dir": str(tmp.resolve())}
        metrics, items = run_evaluation(evaluate_into, kwargs, launcher, EVAL_LOGS / task,
                                        device=cfg.get("device", "auto"), stage=f"eval_{task}")
        write_run_info(tmp, f"eval_{task}", {"eval": cfg, "model": params["model"]}, params.get("seed"))
    atomic_write_bytes(items_path("base", task), items_npz(items))
    atomic_write_json(f"reports/metrics/eval_{task}.json", metrics)
    return metrics
