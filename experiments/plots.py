"""Plots of the comparisons (matplotlib, headless): `plot_comparison(rows, path)`, test
accuracy (mean ± std over seeds) of several methods, and against their operations (float
MACs + binary MACs / 64). A run's own figure is `pabt_tf.run.plots.plot_run`.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pabt_tf._atomic import atomic_path  # noqa: E402
from pabt_tf.run.plots import plot_run  # noqa: E402,F401  (it used to live here)

__all__ = ["plot_comparison", "plot_run"]


def plot_comparison(rows: Sequence[dict[str, Any]], path: str, title: str = "") -> str:
    """Accuracy (mean ± std over seeds) of each method, and against its operations.

    # Arguments
        rows: dicts with `label`, `accuracy_mean`, `accuracy_std` (fractions), `ops` (or
            `float_macs` and `bops`), and optionally `accuracies` (per seed).
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.0))
    labels = [r["label"] for r in rows]
    # Segmentation rows are judged by mean IoU, classification rows by accuracy.
    seg = bool(rows) and rows[0].get("task") == "segmentation"
    key, name = ("miou", "test mIoU (%)") if seg else ("accuracy", "test accuracy (%)")
    means = np.array([r[f"{key}_mean"] for r in rows], dtype=float) * 100
    stds = np.array([r[f"{key}_std"] or 0.0 for r in rows], dtype=float) * 100
    ax = axes[0]
    x = np.arange(len(rows))
    ax.bar(x, means, yerr=stds, capsize=4, color=[f"C{i}" for i in range(len(rows))])
    for i, r in enumerate(rows):
        accs = np.asarray([a for a in r.get("mious" if seg else "accuracies", []) if a is not None],
                          dtype=float) * 100
        ax.plot(np.full(len(accs), i), accs, "k.", ms=4)
    lo = max(0.0, float(np.min(means - stds)) - 3)
    ax.set_ylim(lo, min(100.0, float(np.max(means + stds)) + 1.5))
    ax.set_xticks(x, labels, rotation=20, fontsize=8)
    ax.set_ylabel(name)
    ax.set_title(title or f"{name}, mean ± std over seeds")
    ax = axes[1]
    for i, r in enumerate(rows):
        ops = r.get("ops")
        if ops is None:
            ops = (r.get("float_macs") or 0) + (r.get("bops") or 0) / 64
        ax.errorbar(ops / 1e6, means[i], yerr=stds[i], fmt="o", color=f"C{i}",
                    label=labels[i], capsize=3)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    lo, hi = ax.get_xlim()
    ax.set_xticks([t for t in (0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100, 300, 1000) if lo <= t <= hi])
    ax.set_xlabel("OPs per image, millions (float MACs + binary MACs / 64)")
    ax.set_ylabel(name)
    ax.legend(fontsize=8)
    ax.set_title(f"{name[5:-4]} vs operations")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        with atomic_path(path) as tmp:  # a failed save keeps the previous figure
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    return path
