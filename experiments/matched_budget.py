"""The binary-convolution budget a set of finished PaBT runs landed at, for budget-matched
comparisons (issue 28: PaBT pruned to a latency target against PaBT with `budget=`).

    python -m experiments.matched_budget results/cifar10/latency/pabt_lat1.5

prints the mean over the directory's runs (`runs/*/results.json`) of each run's final
MAC-weighted mean of active binary convolutions per layer: the quantity
`PaBTPruningCallback(budget=...)` stops at (plain or `mac_weighted` ranking alike).
Exits 2 when no finished run is there.
"""

from __future__ import annotations

import glob
import os
import sys

import numpy as np
from absl import app

from experiments.common import read_json
from pabt_tf.pruning import mac_weighted_mean


def run_budget(run_dir: str) -> float:
    """The MAC-weighted mean of a finished run's final active binary convolutions.

    # Raises
        ValueError: the run records no PaBT layers (no `active_binary_convs`, or no
            per-layer MACs in its history).
    """
    results = read_json(os.path.join(run_dir, "results.json"))
    history = read_json(os.path.join(run_dir, "history.json"))
    active, macs = results.get("active_binary_convs"), history.get("binary_conv_macs")
    if not active or not macs or len(active) != len(macs):
        raise ValueError(f"{run_dir}: no PaBT layers recorded (active_binary_convs, binary_conv_macs).")
    return mac_weighted_mean(macs, active)


def matched_budget(directory: str) -> tuple[float, list[float]]:
    """Mean over the finished runs under `directory/runs/`, and each run's budget."""
    paths = sorted(glob.glob(os.path.join(directory, "runs", "*", "results.json")))
    budgets = [run_budget(os.path.dirname(p)) for p in paths]
    if not budgets:
        raise FileNotFoundError(f"no finished run under {directory}/runs/")
    return float(np.mean(budgets)), budgets


def main(argv):
    if len(argv) != 2:
        print("usage: python -m experiments.matched_budget COMPARISON_DIR", file=sys.stderr)
        return 2
    try:
        mean, budgets = matched_budget(argv[1])
    except FileNotFoundError as err:
        print(err, file=sys.stderr)
        return 2
    print(f"per run: {', '.join(f'{b:.3f}' for b in budgets)}", file=sys.stderr)
    print(f"{mean:.3f}")
    return 0


if __name__ == "__main__":
    app.run(main)
