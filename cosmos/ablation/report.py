"""The ablation report: base + variant metrics -> reports/ablation/ (Markdown, LaTeX, CSV, PNG, report.md).

Tables (one per axis, plus the paper's cumulative Table 5 and the feature-suppression probes) are declared
here as data over variant names; rows whose variant did not run are listed as expected-but-missing instead
of silently dropped. Every cell is the mean over the variant's seeds with a 95% interval (bootstrap over
evaluation items x seeds, :mod:`cosmos.ablation.estimates`); every comparison is a paired difference with
its interval, called a gain or a loss only when the interval excludes zero; the paper's claims get a
verdict (:mod:`cosmos.ablation.claims`). The report also draws the learning curves of the core variants and
the base model's cross-attention maps. It names the command, the git revision, the chance levels and each
variant's overrides; nothing in it is written by hand.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from cosmos.ablation.claims import check_claims, claims_markdown, claims_summary
from cosmos.ablation.estimates import EVAL_TASKS, RunResults, load_run_results, variant_estimate
from cosmos.ablation.grid import BASE, extra_seed_runs, run_name, variant_label, variant_names, variant_params
from cosmos.io.atomic import atomic_write_bytes, atomic_write_text
from cosmos.io.provenance import code_revision, pipeline_command
from cosmos.report import plots
from cosmos.report.intervals import format_interval
from cosmos.report.tables import (Column, Intervals, TableSpec, lookup, missing_variants, to_csv, to_latex,
                                  to_markdown)

__all__ = ["EVAL_TASKS", "columns", "render_report", "table_specs"]

CORE = ("clip", "clip_long", "no_cross_attn", BASE)  # the comparisons with seeds, learning curves


def columns(weights: str) -> tuple[Column, ...]:
    """Main metric columns; segmentation is always the teacher's (reference spec 2.3)."""
    return (
        Column(f"retrieval.{weights}.image_to_text_R@1", "I2T R@1"),
        Column(f"retrieval.{weights}.text_to_image_R@1", "T2I R@1"),
        Column(f"classification.{weights}.synthetic_objects.top1", "Cls top-1 (objects)"),
        Column(f"classification.{weights}.synthetic_scenes.top1", "Cls top-1 (scenes)"),
        Column("segmentation.teacher.synthetic_bg.mIoU", "Seg mIoU (bg)"),
        Column("segmentation.teacher.synthetic_stuff.mIoU", "Seg mIoU (stuff)"),
        Column(f"compositional.{weights}.mean", "Comp. acc"),
    )


def suppression_columns(weights: str) -> tuple[Column, ...]:
    """The feature-suppression probes (cosmos/data/synthetic/probes.py) and their dominant - minor gaps."""
    sup = f"compositional.{weights}.suppression"
    return (
        Column(f"{sup}.dominant_obj", "dominant obj"),
        Column(f"{sup}.minor_obj", "minor obj"),
        Column(f"{sup}.gap_obj", "gap obj (lower: less suppression)", higher_is_better=False),
        Column(f"{sup}.dominant_att", "dominant att"),
        Column(f"{sup}.minor_att", "minor att"),
        Column(f"{sup}.gap_att", "gap att", higher_is_better=False),
        Column(f"{sup}.minor_pos", "minor position"),
    )


_AXES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("cumulative", "Cumulative ablation (paper Table 5)",
     ("clip", "clip_multicrop", "clip_multicrop_imgdistill", "clip_multicrop_imgdistill_textcrop",
      "no_cross_attn", BASE)),
    ("text_crop", "Text crop on / off", (BASE, "no_text_crop")),
    ("cross_attention", "Cross-attention on / off", (BASE, "no_cross_attn")),
    ("data_size", "Training data size", ("cosmos_data25", "cosmos_data50", BASE, "clip_data25", "clip_data50", "clip")),
    ("baselines", "COSMOS against its baselines", ("clip", "clip_long", "silc", BASE)),
    ("suppression", "Feature suppression (probes naming one object; chance 50, gap chance 0)", CORE),
)


def table_specs(params: Mapping[str, Any], weights: str) -> list[TableSpec]:
    known = set(params["ablation"]["variants"]) | {BASE}
    specs = []
    for name, title, rows in _AXES:
        labelled = tuple((v, variant_label(params, v) if v in known else v) for v in rows)
        cols = suppression_columns(weights) if name == "suppression" else columns(weights)
        specs.append(TableSpec(name, title, labelled, cols))
    return specs


def estimate_frames(spec: TableSpec, res: RunResults, params) -> tuple[pd.DataFrame, Intervals, dict[str, int]]:
    """Means, 95% bounds (frames indexed by row label) and the seed count of each row."""
    means, lo, hi, seeds = {}, {}, {}, {}
    for variant, label in spec.rows:
        ests = [variant_estimate(res, params, variant, c.path) if variant in res.metrics else None
                for c in spec.columns]
        means[label] = [np.nan if e is None else e.point for e in ests]
        lo[label] = [np.nan if e is None else e.lo for e in ests]
        hi[label] = [np.nan if e is None else e.hi for e in ests]
        seeds[label] = len(res.runs(params, variant)) if variant in res.metrics else 0
    cols = [c.label for c in spec.columns]

    def frame(d):
        f = pd.DataFrame.from_dict(d, orient="index", columns=cols, dtype=float)
        f.index.name = "variant"
        return f
    return frame(means), Intervals(frame(lo), frame(hi)), seeds


def _with_seeds(frame: pd.DataFrame, iv: Intervals, seeds: dict[str, int]):
    rename = {k: f"{k} [{n} seed{'s' if n != 1 else ''}]" for k, n in seeds.items() if n}
    return frame.rename(index=rename), Intervals(iv.lo.rename(index=rename), iv.hi.rename(index=rename))


_DATA_SERIES = {"COSMOS": ("cosmos_data25", "cosmos_data50", BASE),
                "CLIP (alt text)": ("clip_data25", "clip_data50", "clip")}


def _data_size_frame(params, res: RunResults, metric_cols: tuple[Column, ...]) -> pd.DataFrame:
    """Tidy rows (method, data_fraction, metric, value); fractions come from each run's own params."""
    rows = []
    for method, names in _DATA_SERIES.items():
        for name in names:
            if name not in res.metrics:
                continue
            fraction = (params if name == BASE else variant_params(params, name))["train"]["data_fraction"]
            for col in metric_cols:
                est = variant_estimate(res, params, name, col.path)
                if est is not None:
                    rows.append({"method": method, "data_fraction": fraction, "metric": col.label, "value": est.point})
    return pd.DataFrame(rows)


def _bars_frame(frame: pd.DataFrame) -> pd.DataFrame:
    tidy = frame.reset_index().melt(id_vars="variant", var_name="metric", value_name="value")
    return tidy.dropna()


def _chance_lines(base: Mapping[str, Any], weights: str) -> list[str]:
    chance = {
        "I2T / T2I R@1": (lookup(base, "retrieval.chance.image_to_text_R@1"), lookup(base, "retrieval.chance.text_to_image_R@1")),
        "Cls top-1 (objects / scenes)": (lookup(base, "classification.chance.synthetic_objects.top1"),
                                         lookup(base, "classification.chance.synthetic_scenes.top1")),
        "Seg mIoU (bg / stuff)": (lookup(base, "segmentation.chance.synthetic_bg"), lookup(base, "segmentation.chance.synthetic_stuff")),
        "Comp. acc": (lookup(base, "compositional.chance.mean"),),
        "Suppression probes / gaps": (lookup(base, "compositional.chance.suppression.minor_obj"),
                                      lookup(base, "compositional.chance.suppression.gap_obj")),
    }
    return [f"- {k}: " + " / ".join("–" if v is None else f"{v:.1f}" for v in vals) for k, vals in chance.items()]


def _findings(res: RunResults, params, weights: str) -> list[str]:
    """COSMOS minus each CLIP baseline, per metric, with the paired interval and its verdict."""
    lines = []
    for other in ("clip", "clip_long"):
        if BASE not in res.metrics or other not in res.metrics:
            lines.append(f"- COSMOS or {variant_label(params, other)} did not run, so they cannot be compared.")
            continue
        lines.append(f"COSMOS minus {variant_label(params, other)}:")
        for col in (*columns(weights), suppression_columns(weights)[2]):
            a, b = (variant_estimate(res, params, v, col.path) for v in (BASE, other))
            if a is None or b is None:
                continue
            diff = a - b
            verdict = diff.verdict()
            if not col.higher_is_better:
                verdict = {"gain": "loss", "loss": "gain"}.get(verdict, verdict)
            word = {"gain": "COSMOS better", "loss": "COSMOS worse", "none": "no measurable difference"}[verdict]
            lines.append(f"- {col.label}: {a.point:.1f} vs {b.point:.1f}, difference "
                         f"{format_interval(diff, signed=True)}: {word}.")
        lines.append("")
    return lines


def _curve_frame(params, curves_dir: Path, weights: str) -> pd.DataFrame:
    """Tidy learning-curve rows of the core variants' runs (runs/curves/<run>.json)."""
    rows = []
    for variant in CORE:
        for run in [variant] + [run_name(v, s) for v, s in extra_seed_runs(params) if v == variant]:
            path = curves_dir / f"{run}.json"
            if not path.exists():
                continue
            curve = json.loads(path.read_text())
            label = variant_label(params, variant)
            which = weights if f"{weights}_i2t_R@1" in curve else "student"  # CLIP has no teacher
            for metric, key in (("I2T R@1", f"{which}_i2t_R@1"), ("T2I R@1", f"{which}_t2i_R@1")):
                for samples, value in zip(curve.get("samples", []), curve.get(key, [])):
                    rows.append({"variant": label, "seed": run, "samples": samples, "metric": metric, "value": value})
    return pd.DataFrame(rows)


def provenance_line(rev: Mapping[str, Any], command: str) -> str:
    """Which command and which code revision produced the numbers (`cosmos.io.provenance.code_revision`)."""
    line = f"Generated by `{command}` from code revision `{rev['commit']}`"
    changed = list(rev.get("changed_code") or [])
    if changed:
        shown = ", ".join(f"`{p}`" for p in changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        line += f", with uncommitted changes to {shown}"
    if rev.get("params_changed"):
        line += " (params.yaml differs from that revision: the configs are listed at the end)"
    return line + "; do not edit by hand."


def render_report(params: Mapping[str, Any], out_dir: str | Path = "reports/ablation",
                  metrics_dir: str | Path = "reports/metrics", items_dir: str | Path = "runs/items",
                  curves_dir: str | Path = "runs/curves", pictures_dir: str | Path = "runs/eval/retrieval"
                  ) -> dict[str, Any]:
    """Write every table and plot and report.md into `out_dir`; returns a summary for the metrics JSON."""
    out_dir = Path(out_dir)
    weights = params["ablation"]["report_weights"]
    res = load_run_results(params, metrics_dir, items_dir)
    expected = [BASE, *variant_names(params), *(run_name(v, s) for v, s in extra_seed_runs(params))]
    missing = [v for v in expected if v not in res.metrics]
    md = [f"# Ablation report ({params['ablation']['name']})", "",
          provenance_line(code_revision(), pipeline_command(params["ablation"].get("select", ""))),
          f"Retrieval, classification and compositional scores are the {weights}'s; segmentation is the "
          "teacher's (reference spec 2.3). All scores in %. Each cell: mean over the row's training seeds "
          "[95% interval: bootstrap over evaluation items, combined with the seed spread; rows with one seed "
          "carry the item part only]. Bold: the best mean of a column.", "", "Chance levels:",
          *_chance_lines(res.metrics.get(BASE, {}), weights)]
    md += ["", "Runs expected but not found: " + (", ".join(missing) if missing else "none"), ""]
    frames = {}
    for spec in table_specs(params, weights):
        frame, iv, seeds = estimate_frames(spec, res, params)
        frames[spec.name] = frame
        shown, shown_iv = _with_seeds(frame, iv, seeds)
        atomic_write_text(out_dir / f"{spec.name}.md", to_markdown(shown, spec, intervals=shown_iv))
        atomic_write_text(out_dir / f"{spec.name}.tex", to_latex(shown, spec, intervals=shown_iv))
        atomic_write_text(out_dir / f"{spec.name}.csv", to_csv(shown, shown_iv))
        absent = missing_variants(spec.rows, res.metrics)
        md += [f"## {spec.title}", "", to_markdown(shown, spec, intervals=shown_iv)]
        if absent:
            md += [f"Not trained in this grid: {', '.join(absent)} (`dvc exp run -S ablation=full` trains them).", ""]
    md += ["## What the grid shows", "", "Differences are paired (the same evaluation items), with 95% "
           "intervals; a difference whose interval contains zero is no measurable difference.", "",
           *_findings(res, params, weights)]
    est = lambda v, path: variant_estimate(res, params, v, path)  # noqa: E731
    verdicts = check_claims(weights, est, set(res.metrics))
    md += ["## Paper claims", "", "Each claim of the paper's ablation (section 4.4, Table 5), judged on this "
           "grid: retrieval claims on (I2T R@1 + T2I R@1) / 2. Reproduced = every listed difference's 95% "
           "interval lies above zero; not measurable = a variant the claim needs was not trained.", "",
           *claims_markdown(verdicts), ""]
    curves = _curve_frame(params, Path(curves_dir), weights)
    if not curves.empty:
        plots.learning_curves(curves, out_dir / "learning_curves.png",
                              f"Retrieval R@1 during training ({weights}; CLIP: its only model)")
        md += ["## Learning curves", "", "R@1 on the first images of the retrieval set, logged during training "
               "(cosmos/training/validation.py); the band spans the seeds.", "",
               "![learning curves](learning_curves.png)", ""]
    picture = Path(pictures_dir) / "cross_attention_teacher.png"
    if picture.exists():
        atomic_write_bytes(out_dir / "cross_attention.png", picture.read_bytes())
        md += ["## Cross-attention maps", "", "The base COSMOS teacher's cross-attention (image patches attending "
               "to the caption, and caption tokens to the image) on the first retrieval pairs, each map "
               "normalised to [0, 1] (cosmos/eval/pictures.py).", "", "![cross-attention maps](cross_attention.png)", ""]
    size = _data_size_frame(params, res, columns(weights)[:4])
    if not size.empty:
        plots.data_size_plot(size, out_dir / "data_size.png", "Metric vs training data size")
        md += ["![metric versus data size](data_size.png)", ""]
    bars = _bars_frame(frames["cumulative"])
    if not bars.empty:
        plots.benchmark_bars(bars, out_dir / "cumulative_bars.png", "Cumulative ablation, per benchmark")
        md += ["![per-benchmark bars](cumulative_bars.png)", ""]
    md += ["## Runs and their configs", "", "Base: the top-level `distill`, `model`, `optim`, `train` sections of "
           "params.yaml. Variants: the base with these overrides. Replicates (`<variant>-s<seed>`): the same "
           f"config at training seeds {list(params['ablation'].get('extra_seeds') or [])}.", ""]
    for name in variant_names(params):
        overrides = params["ablation"]["variants"][name]
        md += [f"<details><summary>{name}: {variant_label(params, name)}</summary>", "", "```yaml",
               yaml.safe_dump(overrides, sort_keys=True).rstrip(), "```", "</details>", ""]
    atomic_write_text(out_dir / "report.md", "\n".join(md) + "\n")
    base_row = {}
    for col in columns(weights):
        e = variant_estimate(res, params, BASE, col.path) if BASE in res.metrics else None
        if e is not None:
            base_row[col.label] = {"mean": round(e.point, 3), "lo": round(e.lo, 3), "hi": round(e.hi, 3)}
    return {"runs_expected": len(expected), "runs_found": len(expected) - len(missing), "missing": missing,
            "claims": claims_summary(verdicts), "cosmos": base_row}
