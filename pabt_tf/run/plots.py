"""The figure of a training run (matplotlib, headless): `plot_run(history, path)`, its
pruning trajectory — mean binary convolutions and validation accuracy per epoch, a
per-layer heatmap of surviving binary convolutions per epoch, and each layer's final
`(M, N)` mask.
"""

from __future__ import annotations

import os
from typing import Any

import matplotlib

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
