"""The figure of a training run (matplotlib, headless): `plot_run(history, path)`, its
pruning trajectory — mean active binary convolutions at every pruning event and
validation accuracy per epoch, a per-layer heatmap of surviving binary convolutions per
epoch, and each layer's final `(M, N)` mask as its own grid.
"""

from __future__ import annotations

import math
import os
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from pabt_tf._atomic import atomic_path  # noqa: E402

__all__ = ["plot_run", "pruning_trajectory"]


def pruning_trajectory(history: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean active binary convolutions per PaBT layer after every pruning event.

    # Arguments
        history: a run's `history.json` content with `pruning_events` (each with `step`
            and `active_after`, active binary convolutions per layer), `steps_per_epoch`,
            `binary_conv_macs` (MACs of one binary convolution per layer, the weights of
            the mean, as `pabt_tf.mean_binary_convs`) and `initial_active`.

    # Returns
        `(epochs, means)`: the training time of each point in epochs (`step /
        steps_per_epoch`; the first point is the start, 0, with the initial counts) and
        the MAC-weighted mean there; `None` if the history lacks any of those keys (runs
        recorded before they were kept).
    """
    events = history.get("pruning_events") or []
    macs = history.get("binary_conv_macs")
    steps = history.get("steps_per_epoch")
    initial = history.get("initial_active")
    if not events or not macs or not steps or initial is None:
        return None
    weights = np.asarray(macs, dtype=float)

    def mean(active) -> float:
        return float(np.dot(weights, np.asarray(active, dtype=float)) / weights.sum())

    epochs = [0.0] + [event["step"] / steps for event in events]
    means = [mean(initial)] + [mean(event["active_after"]) for event in events]
    return np.asarray(epochs), np.asarray(means)


def _integer_ticks(ax) -> None:
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))


def _trajectory_panel(ax, history: dict[str, Any], epochs: np.ndarray, title: str) -> None:
    """Mean binary convolutions (every pruning event and each epoch end) and accuracy."""
    if history.get("mean_binary_convs"):
        trajectory = pruning_trajectory(history)
        if trajectory is not None:
            xs, ys = trajectory
            end = max(float(epochs[-1]) if len(epochs) else 0.0, float(xs[-1]))
            xs, ys = np.append(xs, end), np.append(ys, ys[-1])  # flat after the last event
            ax.step(xs, ys, where="post", color="tab:red", lw=1.4,
                    label="mean binary convs kept, every pruning event")  # fmt: skip
        xs, ys = list(epochs), list(history["mean_binary_convs"])
        if history.get("initial_mean_binary_convs") is not None:  # before training
            xs, ys = [0.0] + xs, [history["initial_mean_binary_convs"]] + ys
        ax.plot(xs, ys, "o", color="tab:red", ms=4,
                label="mean binary convs active at epoch end (fading ones count)"
                if trajectory is not None else "mean binary convs")  # fmt: skip
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
    _integer_ticks(ax)
    lines = ax.get_legend_handles_labels()
    if ax2 is not ax:
        more = ax2.get_legend_handles_labels()
        lines = (lines[0] + more[0], lines[1] + more[1])
    ax.legend(*lines, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=7)
    ax.set_title(title or "pruning trajectory")


def _heatmap_panel(fig, ax, history: dict[str, Any], names: list[str]) -> None:
    per_epoch = list(history["active_per_layer"])
    first = 1
    if history.get("initial_active"):
        per_epoch, first = [history["initial_active"]] + per_epoch, 0
    active = np.asarray(per_epoch, dtype=float).T  # layers × epochs
    im = ax.imshow(active, aspect="auto", cmap="viridis", interpolation="nearest", vmin=0,
                   extent=(first - 0.5, first + active.shape[1] - 0.5, active.shape[0] - 0.5, -0.5))
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("epoch (0 = before training)" if first == 0 else "epoch")
    _integer_ticks(ax)
    ax.set_title("surviving binary convs per layer")
    fig.colorbar(im, ax=ax)
    if active.shape[1] <= 30:
        for (i, j), v in np.ndenumerate(active):
            ax.text(j + first, i, f"{int(v)}", ha="center", va="center", color="w", fontsize=7)


def _mask_panels(fig, spec, masks: list[np.ndarray], names: list[str]) -> None:
    """Each layer's `(M, N)` mask in its own small axes, cells outlined."""
    cols = min(len(masks), max(1, math.ceil(math.sqrt(len(masks) * 1.5))))
    rows = math.ceil(len(masks) / cols)
    grid = spec.subgridspec(rows + 1, cols, height_ratios=[0.12] + [1.0] * rows,
                            hspace=0.7, wspace=0.45)  # fmt: skip
    head = fig.add_subplot(grid[0, :])
    head.axis("off")
    head.set_title("final masks (black = kept; rows m, columns n)")
    for k, (mask, name) in enumerate(zip(masks, names)):
        ax = fig.add_subplot(grid[1 + k // cols, k % cols])
        ax.pcolormesh(mask, cmap="Greys", vmin=0, vmax=1, edgecolors="tab:gray", linewidth=0.8)
        ax.set_xlim(0, mask.shape[1])
        ax.set_ylim(mask.shape[0], 0)  # m = 0 at the top
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_color("tab:blue")
            spine.set_linewidth(1.2)
        ax.set_title(name, fontsize=6)


def plot_run(history: dict[str, Any], path: str, title: str = "") -> str:
    """Write the pruning-trajectory figure of one run.

    # Arguments
        history: the run's `history.json` content: per-epoch lists `epoch`,
            `val_accuracy`, `accuracy` and, for PaBT runs, `mean_binary_convs`,
            `layer_names`, `active_per_layer` (epochs × layers), `final_masks` (list of
            `(M, N)` 0/1 lists) and, to draw every pruning event, `pruning_events`,
            `steps_per_epoch`, `binary_conv_macs` and `initial_active`
            (`pruning_trajectory`).
        path: PNG file to write.
        title: the first panel's title.

    # Returns
        `path`.
    """
    epochs = np.asarray(history.get("epoch", []), dtype=float) + 1
    has_pabt = bool(history.get("active_per_layer"))
    ncols = 3 if has_pabt else 1
    fig = plt.figure(figsize=(5.6 * ncols, 5.0))
    spec = fig.add_gridspec(1, ncols, left=0.22 / ncols, right=1 - 0.05 / ncols, bottom=0.24,
                            top=0.9, wspace=0.45)  # fmt: skip
    _trajectory_panel(fig.add_subplot(spec[0, 0]), history, epochs, title)
    if has_pabt:
        active_layers = len(history["active_per_layer"][0]) if history["active_per_layer"] else 0
        names = history.get("layer_names", [str(i) for i in range(active_layers)])
        _heatmap_panel(fig, fig.add_subplot(spec[0, 1]), history, names)
        masks = [np.asarray(m, dtype=float) for m in history.get("final_masks", [])]
        if masks:
            _mask_panels(fig, spec[0, 2], masks, names)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        with atomic_path(path) as tmp:  # a failed save keeps the previous figure
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    return path
