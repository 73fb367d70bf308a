"""The ablation report: base + variant metrics -> reports/ablation/ (Markdown, LaTeX, CSV, PNG, report.md).

Tables (one per axis, plus the paper's cumulative Table 5) are declared here as data over variant names;
rows whose variant did not run are listed as expected-but-missing instead of silently dropped. The report
names the command, the git revision, the chance levels and each variant's overrides, and states plainly
how COSMOS compares with CLIP; nothing in it is written by hand.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from cosmos.ablation.grid import BASE, variant_label, variant_names, variant_params
from cosmos.ablation.run import variant_metrics_path
from cosmos.io.atomic import atomic_write_text
from cosmos.io.provenance import git_revision
from cosmos.report import plots
from cosmos.report.tables import Column, TableSpec, build_table, lookup, missing_variants, to_csv, to_latex, to_markdown

EVAL_TASKS = ("retrieval", "classification", "segmentation", "compositional")
COMMAND = "dvc repro   (or: dvc repro ablation_tables)"


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


_AXES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("cumulative", "Cumulative ablation (paper Table 5)",
     ("clip", "clip_multicrop", "clip_multicrop_imgdistill", "clip_multicrop_imgdistill_textcrop",
      "no_cross_attn", BASE)),
    ("text_crop", "Text crop on / off", (BASE, "no_text_crop")),
    ("cross_attention", "Cross-attention on / off", (BASE, "no_cross_attn")),
    ("data_size", "Training data size", ("cosmos_data25", "cosmos_data50", BASE, "clip_data25", "clip_data50", "clip")),
    ("baselines", "COSMOS against its baselines", ("clip", "clip_long", "silc", BASE)),
)


def table_specs(params: Mapping[str, Any], weights: str) -> list[TableSpec]:
    known = set(params["ablation"]["variants"]) | {BASE}
    specs = []
    for name, title, rows in _AXES:
        labelled = tuple((v, variant_label(params, v) if v in known else v) for v in rows)
        specs.append(TableSpec(name, title, labelled, columns(weights)))
    return specs


def load_base_metrics(metrics_dir: str | Path = "reports/metrics") -> dict[str, Any]:
    out = {}
    for task in EVAL_TASKS:
        path = Path(metrics_dir) / f"eval_{task}.json"
        if path.exists():
            out[task] = json.loads(path.read_text())
    return out


def load_results(params: Mapping[str, Any], metrics_dir: str | Path = "reports/metrics") -> dict[str, dict]:
    """{variant: metrics} for the base and every variant in `ablation.run` whose metrics file exists."""
    results = {}
    base = load_base_metrics(metrics_dir)
    if base:
        results[BASE] = base
    for name in variant_names(params):
        path = variant_metrics_path(name)
        if path.exists():
            results[name] = json.loads(path.read_text())
    return results


_DATA_SERIES = {"COSMOS": ("cosmos_data25", "cosmos_data50", BASE),
                "CLIP (alt text)": ("clip_data25", "clip_data50", "clip")}


def _data_size_frame(params, results, metric_cols: tuple[Column, ...]) -> pd.DataFrame:
    """Tidy rows (method, data_fraction, metric, value); fractions come from each run's own params."""
    rows = []
    for method, names in _DATA_SERIES.items():
        for name in names:
            if name not in results:
                continue
            fraction = (params if name == BASE else variant_params(params, name))["train"]["data_fraction"]
            for col in metric_cols:
                value = lookup(results[name], col.path)
                if value is not None:
                    rows.append({"method": method, "data_fraction": fraction, "metric": col.label, "value": value})
    return pd.DataFrame(rows)


def _bars_frame(frame: pd.DataFrame) -> pd.DataFrame:
    tidy = frame.reset_index().melt(id_vars="variant", var_name="metric", value_name="value")
    return tidy.dropna()


def _chance_lines(base: Mapping[str, Any]) -> list[str]:
    chance = {
        "I2T / T2I R@1": (lookup(base, "retrieval.chance.image_to_text_R@1"), lookup(base, "retrieval.chance.text_to_image_R@1")),
        "Cls top-1 (objects / scenes)": (lookup(base, "classification.chance.synthetic_objects.top1"),
                                         lookup(base, "classification.chance.synthetic_scenes.top1")),
        "Seg mIoU (bg / stuff)": (lookup(base, "segmentation.chance.synthetic_bg"), lookup(base, "segmentation.chance.synthetic_stuff")),
        "Comp. acc": (lookup(base, "compositional.chance.mean"),),
    }
    return [f"- {k}: " + " / ".join("–" if v is None else f"{v:.1f}" for v in vals) for k, vals in chance.items()]


def _findings(frame: pd.DataFrame, params) -> list[str]:
    """Plain statements comparing the base (COSMOS) with the CLIP rows of the cumulative table."""
    base, clip = variant_label(params, BASE), variant_label(params, "clip")
    if base not in frame.index or clip not in frame.index:
        return ["- COSMOS or CLIP did not run, so they cannot be compared."]
    lines = []
    for col in frame.columns:
        b, c = frame.loc[base, col], frame.loc[clip, col]
        if pd.isna(b) or pd.isna(c):
            continue
        verdict = "beats" if b > c else ("ties" if b == c else "does NOT beat")
        lines.append(f"- {col}: COSMOS {b:.1f} vs CLIP {c:.1f}: COSMOS {verdict} CLIP.")
    return lines


def render_report(params: Mapping[str, Any], out_dir: str | Path = "reports/ablation",
                  metrics_dir: str | Path = "reports/metrics") -> dict[str, Any]:
    """Write every table and plot and report.md into `out_dir`; returns a summary for the metrics JSON."""
    out_dir = Path(out_dir)
    weights = params["ablation"]["report_weights"]
    results = load_results(params, metrics_dir)
    expected = [BASE, *variant_names(params)]
    missing = [v for v in expected if v not in results]
    git = git_revision()
    md = [f"# Ablation report ({params['ablation']['name']})", "",
          f"Generated by `{COMMAND}` at git revision `{git['commit']}`"
          f"{' (uncommitted changes)' if git['dirty'] else ''}; do not edit by hand.",
          f"Retrieval, classification and compositional scores are the {weights}'s; segmentation is the "
          "teacher's (reference spec 2.3). All scores in %.", "", "Chance levels:", *_chance_lines(results.get(BASE, {}))]
    md += ["", "Variants expected but not found: " + (", ".join(missing) if missing else "none"), ""]
    frames = {}
    for spec in table_specs(params, weights):
        frame = build_table(spec, results)
        frames[spec.name] = frame
        atomic_write_text(out_dir / f"{spec.name}.md", to_markdown(frame, spec))
        atomic_write_text(out_dir / f"{spec.name}.tex", to_latex(frame, spec))
        atomic_write_text(out_dir / f"{spec.name}.csv", to_csv(frame))
        absent = missing_variants(spec.rows, results)
        md += [f"## {spec.title}", "", to_markdown(frame, spec)]
        if absent:
            md += [f"Not found: {', '.join(absent)}.", ""]
    md += ["## What the grid shows", "", *_findings(frames["cumulative"], params), ""]
    size = _data_size_frame(params, results, columns(weights)[:4])
    if not size.empty:
        plots.data_size_plot(size, out_dir / "data_size.png", "Metric vs training data size")
        md += ["![metric versus data size](data_size.png)", ""]
    bars = _bars_frame(frames["cumulative"])
    if not bars.empty:
        plots.benchmark_bars(bars, out_dir / "cumulative_bars.png", "Cumulative ablation, per benchmark")
        md += ["![per-benchmark bars](cumulative_bars.png)", ""]
    md += ["## Runs and their configs", "", "Base: the top-level `distill`, `model`, `optim`, `train` sections of "
           "params.yaml. Variants: the base with these overrides.", ""]
    for name in variant_names(params):
        overrides = params["ablation"]["variants"][name]
        md += [f"<details><summary>{name}: {variant_label(params, name)}</summary>", "", "```yaml",
               yaml.safe_dump(overrides, sort_keys=True).rstrip(), "```", "</details>", ""]
    atomic_write_text(out_dir / "report.md", "\n".join(md) + "\n")
    return {"variants_expected": len(expected), "variants_found": len(expected) - len(missing), "missing": missing}
