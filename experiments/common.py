"""Shared helpers of the experiment programs: cost accounting and JSON output."""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
from typing import Any

import larq as lq
import numpy as np
import tensorflow as tf

from pabt_tf.binary_layers import is_binary_quantizer
from pabt_tf.graph import all_layers
from pabt_tf.layers import PaBTLayer


def code_version() -> dict[str, Any] | None:
    """The git commit of the checkout these programs run from, and whether it had
    uncommitted changes (None outside a git checkout): a result says what made it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=30, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=root, capture_output=True, text=True, timeout=30,
                                check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())}


def abc_bases(config: dict[str, Any]) -> tuple[int, int]:
    """ABC-Net's `(M, N)` of a run's config (`model_kwargs.abc_bases`; the zoo's default
    is 3/3)."""
    m, n = (config.get("model_kwargs") or {}).get("abc_bases") or (3, 3)
    return int(m), int(n)


def model_costs(model: tf.keras.Model) -> dict[str, Any]:
    """Per-example MACs of a built model, split into binary and float.

    - PaBT layers: 1-bit MACs of their *active* binary convolutions.
    - Larq `QuantConv2D`/`QuantDense` with 1-bit input and kernel quantizers: 1-bit MACs.
    - Every other `Conv2D` / `DepthwiseConv2D` / `Dense`: float MACs.

    `ops = float_macs + binary_macs / 64` is the Bi-Real / XNOR-Net convention for a
    network's operations (a 64-bit word does 64 binary MACs).

    # Returns
        `{"binary_macs", "bops", "float_macs", "ops", "params", "weight_bytes"}`
        (`bops` = binary MACs, 1-bit × 1-bit operations).
    """
    binary = floating = 0
    for layer in all_layers(model):
        if isinstance(layer, PaBTLayer):
            binary += layer.binary_macs()
            continue
        if not isinstance(layer, (tf.keras.layers.Conv2D, tf.keras.layers.Dense)):
            continue
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        out_shape = layer.output_shape
        if isinstance(out_shape, list):
            out_shape = out_shape[0]
        spatial = int(np.prod([d for d in out_shape[1:-1] if d is not None] or [1]))
        macs = int(np.prod(kernel.shape)) * spatial
        if isinstance(layer, tf.keras.layers.DepthwiseConv2D):
            macs = int(np.prod(kernel.shape)) * spatial
        binary_layer = isinstance(layer, (lq.layers.QuantConv2D, lq.layers.QuantDense)) and (
            is_binary_quantizer(layer.input_quantizer) and is_binary_quantizer(layer.kernel_quantizer)
        )
        if binary_layer:
            binary += macs
        else:
            floating += macs
    return {
        "binary_macs": int(binary),
        "bops": int(binary),
        "float_macs": int(floating),
        "ops": float(floating + binary / 64.0),
        "params": int(model.count_params()),
        "weight_bytes": int(sum(np.asarray(w).nbytes for w in model.get_weights())),
    }


def to_jsonable(value: Any) -> Any:
    """numpy scalars/arrays and tuples -> plain JSON types."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def write_json(path: str, data: Any) -> None:
    """Write `data` as JSON atomically (a temporary file renamed over `path`), so a run
    killed mid-write leaves the previous file, never a truncated one."""
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            json.dump(to_jsonable(data), f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def collect_runs(comparisons: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Finished runs of `experiments.compare` output directories, grouped by variant.

    # Returns
        `{"<comparison>:<variant>": [results, ...]}`, the variant being the run directory's
        name without `_s<seed>`; each results dict gets its `run_dir`.

    # Raises
        ValueError: no finished run (`runs/*/results.json`) under the directories.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for comparison in comparisons:
        for path in sorted(glob.glob(os.path.join(comparison, "runs", "*", "results.json"))):
            run_dir = os.path.dirname(path)
            variant = re.sub(r"_s\d+$", "", os.path.basename(run_dir))
            result = read_json(path)
            result["run_dir"] = run_dir
            groups.setdefault(f"{comparison}:{variant}", []).append(result)
    if not groups:
        raise ValueError(f"No finished runs (runs/*/results.json) under {comparisons}.")
    return groups
