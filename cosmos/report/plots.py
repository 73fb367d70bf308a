"""Seaborn figures for the ablation report: metric versus data size per method, and per-benchmark bars.

Both take a tidy frame (one row per variant x metric) so that they never depend on how results were
collected; files are written atomically as PNG.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: reports are rendered in stages and CI without a display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from cosmos.io.atomic import atomic_write_bytes  # noqa: E402


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def data_size_plot(tidy: pd.DataFrame, path: Path, title: str) -> Path:
    """Lines of `value` against `data_fraction` (in %), one colour per `method`, one panel per `metric`.

    `tidy` columns: method, data_fraction, metric, value.
    """
    metrics = list(dict.fromkeys(tidy["metric"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        part = tidy[tidy["metric"] == metric].assign(percent=lambda d: 100 * d["data_fraction"])
        sns.lineplot(data=part, x="percent", y="value", hue="method", marker="o", ax=ax)
        ax.set(title=metric, xlabel="training data (%)", ylabel="")
    fig.suptitle(title, y=1.04)  # above the panel titles
    return _save(fig, path)


def benchmark_bars(tidy: pd.DataFrame, path: Path, title: str) -> Path:
    """Grouped bars: one group per `metric` (benchmark), one bar per `variant`.

    `tidy` columns: variant, metric, value.
    """
    n_metrics = tidy["metric"].nunique()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * n_metrics), 3.6))
    sns.barplot(data=tidy, x="metric", y="value", hue="variant", ax=ax)
    ax.set(title=title, xlabel="", ylabel="score (%)")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=7, ncols=2)
    return _save(fig, path)


def learning_curves(tidy: pd.DataFrame, path: Path, title: str) -> Path:
    """R@1 against samples seen, one colour per `variant`, one panel per `metric`; seeds give the band.

    `tidy` columns: variant, seed, samples, metric, value.
    """
    metrics = list(dict.fromkeys(tidy["metric"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        part = tidy[tidy["metric"] == metric]
        sns.lineplot(data=part, x="samples", y="value", hue="variant", errorbar=("pi", 100), marker="o",
                     markersize=3, ax=ax)
        ax.set(title=metric, xlabel="training samples seen", ylabel="R@1 (%)")
        ax.legend(fontsize=7)
    fig.suptitle(title, y=1.04)
    return _save(fig, path)
