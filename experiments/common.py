"""Shared helpers of the experiment programs: cost accounting and JSON output."""

from __future__ import annotations

import json
import os
from typing import Any

import larq as lq
import numpy as np
import tensorflow as tf

from pabt_tf.layers import PaBTLayer


def _flat_layers(model: tf.keras.Model) -> list:
    out = []
    for layer in model.layers:
        if isinstance(layer, tf.keras.Model):
            out.extend(_flat_layers(layer))
        else:
            out.append(layer)
    return out


def _is_binary(quantizer) -> bool:
    return quantizer is not None and getattr(quantizer, "precision", 32) == 1


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
    for layer in _flat_layers(model):
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
            _is_binary(layer.input_quantizer) and _is_binary(layer.kernel_quantizer)
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
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(to_jsonable(data), f, indent=2)
        f.write("\n")


def read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)
