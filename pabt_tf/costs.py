"""Cost accounting for PaBT networks: effective bit-width, binary MACs and BOPs — in our
own table (`summary`) and in Larq's (`larq_summary`, `larq_profile`).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import larq as lq
import larq.models as _lq_models
import numpy as np
import tensorflow as tf

from pabt_tf.binary_layers import is_binary_quantizer
from pabt_tf.graph import all_layers
from pabt_tf.layers import PaBTLayer, pabt_layers

__all__ = ["larq_profile", "larq_summary", "mean_binary_convs", "model_costs", "summary"]


def mean_binary_convs(model: tf.keras.Model) -> float:
    """MAC-weighted mean number of active binary convolutions per PaBT layer.

    \\[
    \\bar k = \\frac{\\sum_l \\text{MACs}_l \\cdot k_l}{\\sum_l \\text{MACs}_l}
    \\]

    with `MACs_l` the MACs of one binary convolution of layer `l` and `k_l` its active
    binary convolutions. `1.0` means the network is a BNN; `M·N` an unpruned MBN.

    # Raises
        ValueError: if the model has no (built) PaBT layers.
    """
    layers = pabt_layers(model)
    if not layers:
        raise ValueError(f"Model {model.name!r} has no PaBT layers.")
    macs = [layer.binary_conv_macs() for layer in layers]
    active = [layer.active_binary_convs for layer in layers]
    return float(sum(m * k for m, k in zip(macs, active)) / sum(macs))


def _layer_row(layer: PaBTLayer) -> dict[str, Any]:
    mask = layer.binary_conv_mask
    conv_macs = layer.binary_conv_macs()
    active = int(mask.sum())
    return {
        "layer": layer.name,
        "type": type(layer).__name__,
        "weight_bases": layer.weight_bases,
        "activation_bases": layer.activation_bases,
        "binary_convs": layer.num_binary_convs,
        "active_binary_convs": active,
        # Bases still in use: the layer's weight and activation bit-widths.
        "weight_bits": int(mask.any(axis=1).sum()),
        "activation_bits": int(mask.any(axis=0).sum()),
        # Each active binary convolution is one 1-bit × 1-bit product, so the
        # effective bits (weight bits × activation bits actually in use) are its count.
        "effective_bits": active,
        "binary_conv_macs": conv_macs,
        "binary_macs": active * conv_macs,
        # A 1-bit × 1-bit MAC is one bit operation (BOPs = MACs · b_w · b_a).
        "bops": active * conv_macs,
    }


def summary(model: tf.keras.Model, print_fn: Callable[[str], Any] | None = print) -> list[dict]:
    """Per-layer cost table of a model's PaBT layers.

    Columns: layer, bases `M×N`, active binary convolutions, effective bits (= active
    binary convolutions, i.e. weight bits × activation bits in use; the weight and
    activation bits are the bases still used), 1-bit MACs of the active binary
    convolutions and the BOPs they amount to (per example). The last row is the total,
    with the model's `mean_binary_convs` (1.0 = a BNN).

    # Arguments
        model: a built model containing PaBT layers (nested models are searched).
        print_fn: prints each line of the table; `None` to only return the rows.

    # Returns
        The rows as a list of dicts, one per PaBT layer (keys `layer`, `type`,
        `weight_bases`, `activation_bases`, `binary_convs`, `active_binary_convs`,
        `weight_bits`, `activation_bits`, `effective_bits`, `binary_conv_macs`,
        `binary_macs`, `bops`), then a total row (`layer="Total"`, the sums, and
        `mean_binary_convs`).

    # Raises
        ValueError: if the model has no built PaBT layers.
    """
    layers = pabt_layers(model)
    if not layers or not all(layer.built for layer in layers):
        raise ValueError(f"Model {model.name!r} has no built PaBT layers to summarize.")
    rows = [_layer_row(layer) for layer in layers]
    keys = ("binary_convs", "active_binary_convs", "binary_macs", "bops")
    total = {"layer": "Total", **{k: sum(r[k] for r in rows) for k in keys}}
    total["mean_binary_convs"] = mean_binary_convs(model)
    rows.append(total)
    if print_fn is not None:
        header = ("Layer", "Bases M×N", "Active convs", "Eff. bits (W×A)", "Binary MACs", "BOPs")
        table = [header]
        for r in rows[:-1]:
            table.append(
                (
                    r["layer"],
                    f"{r['weight_bases']}×{r['activation_bases']}",
                    f"{r['active_binary_convs']}/{r['binary_convs']}",
                    f"{r['effective_bits']} ({r['weight_bits']}×{r['activation_bits']})",
                    f"{r['binary_macs']:,}",
                    f"{r['bops']:,}",
                )
            )
        table.append(
            (
                "Total",
                "",
                f"{total['active_binary_convs']}/{total['binary_convs']}",
                "",
                f"{total['binary_macs']:,}",
                f"{total['bops']:,}",
            )
        )
        widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]

        def line(row):
            cells = [str(c).ljust(w) if i == 0 else str(c).rjust(w)
                     for i, (c, w) in enumerate(zip(row, widths))]
            return "  ".join(cells)

        rule = "-" * len(line(header))
        print_fn(f"{model.name}: PaBT layers (per example)")
        print_fn(line(header))
        print_fn(rule)
        for row in table[1:-1]:
            print_fn(line(row))
        print_fn(rule)
        print_fn(line(table[-1]))
        print_fn(f"Mean active binary convolutions (MAC-weighted): {total['mean_binary_convs']:.3f}"
                 " (1.0 = BNN)")
    return rows


class _PaBTLayerProfile(_lq_models.LayerProfile):
    """`larq.models.LayerProfile` that also understands PaBT layers.

    Why: `lq.models.summary` counts MACs only for the layer classes in its
    `mac_containing_layers` tuple, and for those it counts *every* non-bias weight as
    MACs — gates, masks, scales and thresholds would show up as 32-bit MACs. Larq has
    no registration hook, but `ModelProfile` looks `LayerProfile` up in `larq.models`
    at call time, so `larq_profile` swaps that name for the duration of a block. For
    PaBT layers the only MACs are the 1-bit MACs of the active binary convolutions;
    every other layer is profiled exactly as by Larq.
    """

    def __init__(self, layer: tf.keras.layers.Layer):
        super().__init__(layer)
        if isinstance(layer, PaBTLayer):
            self.op_profiles = []
            macs = self._pabt_binary_macs()
            if macs is not None:
                self.op_profiles.append(
                    _lq_models.OperationProfile(n=macs, precision=1, op_type="mac")
                )

    def _pabt_binary_macs(self) -> int | None:
        try:
            return self._layer.binary_macs()
        except ValueError:  # not built, or unknown spatial size
            return None

    def op_count(self, op_type: str | None = None, precision: int | None = None) -> int | None:
        if not isinstance(self._layer, PaBTLayer):
            return super().op_count(op_type, precision)
        if op_type != "mac":
            raise ValueError("Currently only counting of MAC-operations is supported.")
        if not self.op_profiles:
            return None
        return sum(op.n for op in self.op_profiles if precision in (None, op.precision))


@contextlib.contextmanager
def larq_profile() -> Iterator[None]:
    """Within the block, Larq's `lq.models.summary` / `lq.models.ModelProfile` count a
    PaBT layer's MACs as its active binary convolutions' 1-bit MACs.

    Larq is changed only inside the block (and restored even on error): importing
    pabt_tf leaves Larq as it is for code that never asked.

    ```python
    with pabt.larq_profile():
        lq.models.summary(model)
    ```
    """
    original = _lq_models.LayerProfile
    _lq_models.LayerProfile = _PaBTLayerProfile
    try:
        yield
    finally:
        _lq_models.LayerProfile = original


def larq_summary(model: tf.keras.Model, **kwargs) -> Any:
    """`lq.models.summary(model, **kwargs)` with PaBT layers profiled (`larq_profile`)."""
    with larq_profile():
        return lq.models.summary(model, **kwargs)


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
