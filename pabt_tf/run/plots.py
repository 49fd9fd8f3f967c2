"""Plots of the experiments (matplotlib, headless).

- `plot_run(history, path)`: a training run's pruning trajectory — mean binary
  convolutions and validation accuracy per epoch, a per-layer heatmap of surviving binary
  convolutions per epoch, and each layer's final `(M, N)` mask.
- `plot_comparison(rows, path)`: test accuracy (mean ± std over seeds) of several methods,
  and against their operations (float MACs + binary MACs / 64).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_run(history: dict[str, Any], path: str, title: str = "") -> str:
    """Write the pruning-trajectory figure of one run.

    # Arguments
        history: the run's `history.json` content: per-epoch lists `epoch`,
            `val_accuracy`, `accuracy` and, for PaBT runs, `mean_binary_convs`,
            `layer_names`, `active_per_layer` (epochs × layers) and `final_masks`
            (list of `(M, N)` 0/1 lists).
        path: PNG file to write.

    # Returns
        `path`.
    """
    epochs = np.asarray(history.get("epoch", []), dtype=float) + 1
    has_pabt = bool(history.get("active_per_layer"))
    ncols = 3 if has_pabt else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 4.0), squeeze=False)
    ax = axes[0, 0]
    if "mean_binary_convs" in history and history["mean_binary_convs"]:
        xs, ys = list(epochs), list(history["mean_binary_convs"])
        if history.get("initial_mean_binary_convs") is not None:  # before training
            xs, ys = [0.0] + xs, [history["initial_mean_binary_convs"]] + ys
        ax.plot(xs, ys, "o-", color="tab:red", label="mean binary convs")
        ax.set_ylabel("mean active binary convs / layer", color="tab:red")
        ax.axhline(1.0, color="tab:red", lw=0.6, ls=":")
        ax2 = ax.twinx()
    else:
        ax2 = ax
    for key, style in (("val_accuracy", "s-"), ("accuracy", "^--")):
        if history.get(key):
            ax2.plot(epochs, np.asarray(history[key]) * 100, style, label=key.replace("_", " "))
    ax2.set_ylabel("accuracy (%)")
    ax.set_xlabel("epoch")
    lines = ax.get_legend_handles_labels()
    if ax2 is not ax:
        more = ax2.get_legend_handles_labels()
        lines = (lines[0] + more[0], lines[1] + more[1])
    ax.legend(*lines, loc="center right", fontsize=8)
    ax.set_title(title or "pruning trajectory")
    if has_pabt:
        per_epoch = list(history["active_per_layer"])
        first = 1
        if history.get("initial_active"):
            per_epoch, first = [history["initial_active"]] + per_epoch, 0
        active = np.asarray(per_epoch, dtype=float).T  # layers × epochs
        names = history.get("layer_names", [str(i) for i in range(active.shape[0])])
        ax = axes[0, 1]
        im = ax.imshow(active, aspect="auto", cmap="viridis", interpolation="nearest", vmin=0,
                       extent=(first - 0.5, first + active.shape[1] - 0.5, active.shape[0] - 0.5, -0.5))
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xlabel("epoch (0 = before training)" if first == 0 else "epoch")
        ax.set_title("surviving binary convs per layer")
        fig.colorbar(im, ax=ax)
        for (i, j), v in np.ndenumerate(active):
            if active.shape[1] <= 30:
                ax.text(j + first, i, f"{int(v)}", ha="center", va="center", color="w", fontsize=7)
        masks = [np.asarray(m, dtype=float) for m in history.get("final_masks", [])]
        ax = axes[0, 2]
        if masks:
            rows = max(m.shape[0] for m in masks)
            grid = np.full((rows, sum(m.shape[1] + 1 for m in masks) - 1), np.nan)
            col, centers = 0, []
            for m in masks:
                grid[: m.shape[0], col : col + m.shape[1]] = m
                centers.append(col + (m.shape[1] - 1) / 2)
                col += m.shape[1] + 1
            ax.imshow(grid, cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks(centers, names, rotation=60, fontsize=7)
            ax.set_ylabel("weight base m")
            ax.set_xlabel("activation bases n, per layer")
            ax.set_title("final masks (black = kept)")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_comparison(rows: Sequence[dict[str, Any]], path: str, title: str = "") -> str:
    """Accuracy (mean ± std over seeds) of each method, and against its operations.

    # Arguments
        rows: dicts with `label`, `accuracy_mean`, `accuracy_std` (fractions), `ops` (or
            `float_macs` and `bops`), and optionally `accuracies` (per seed).
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.0))
    labels = [r["label"] for r in rows]
    means = np.array([r["accuracy_mean"] for r in rows]) * 100
    stds = np.array([r["accuracy_std"] for r in rows]) * 100
    ax = axes[0]
    x = np.arange(len(rows))
    ax.bar(x, means, yerr=stds, capsize=4, color=[f"C{i}" for i in range(len(rows))])
    for i, r in enumerate(rows):
        accs = np.asarray(r.get("accuracies", []), dtype=float) * 100
        ax.plot(np.full(len(accs), i), accs, "k.", ms=4)
    lo = max(0.0, float(np.min(means - stds)) - 3)
    ax.set_ylim(lo, min(100.0, float(np.max(means + stds)) + 1.5))
    ax.set_xticks(x, labels, rotation=20, fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or "test accuracy, mean ± std over seeds")
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
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)
    ax.set_title("accuracy vs operations")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
