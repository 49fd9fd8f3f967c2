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

__all__ = [
    "deploy_input_shape",
    "larq_profile",
    "larq_summary",
    "mean_binary_convs",
    "model_costs",
    "set_reference_input_shape",
    "summary",
]


def deploy_input_shape(model: tf.keras.Model, input_shape=None, what: str = "input_shape") -> tuple:
    """The full static input batch shape `(B, H, W, C)` of a single-input model: the
    model's own when every dimension but the batch is known (batch 1), else
    `input_shape`.

    # Arguments
        model: a built single-input Keras model.
        input_shape: the shape to use, with the batch (`(1, 360, 480, 3)`) or without
            (`(360, 480, 3)`); its known dimensions must agree with the model's.
        what: the argument's name, for the error messages.

    # Returns
        A tuple of positive ints, batch first.

    # Raises
        ValueError: a model with several inputs (and `input_shape` given), an unknown
            size and no `input_shape`, or an `input_shape` of the wrong rank, with
            non-positive entries or disagreeing with the model.
    """
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1:
        raise ValueError(
            f"`{what}` needs a model with one input; {model.name!r} has {len(inputs)}."
        )
    known = tf.TensorShape(inputs[0].shape).as_list()
    if input_shape is None:
        if any(d is None for d in known[1:]):
            raise ValueError(
                f"model {model.name!r} takes inputs of any size {tuple(known)}: give the "
                f"size to use, `{what}=(1, H, W, C)` (e.g. {(1, *[d or 224 for d in known[1:]])})."
            )
        return (1, *known[1:])
    dims = list(input_shape) if isinstance(input_shape, (tuple, list)) else None
    if dims is not None and len(dims) == len(known) - 1:
        dims = [1, *dims]
    ok = dims is not None and len(dims) == len(known) and all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0 for d in dims
    )
    if not ok:
        raise ValueError(
            f"`{what}` must be {len(known)} positive integers (batch first, e.g. "
            f"{(1, *[d or 224 for d in known[1:]])}), got {input_shape!r}."
        )
    dims = [int(d) for d in dims]
    clash = [i for i, (k, d) in enumerate(zip(known, dims)) if i > 0 and k not in (None, d)]
    if clash:
        raise ValueError(
            f"`{what}`={tuple(dims)} disagrees with model {model.name!r}'s input shape "
            f"{tuple(known)} in dimension {clash[0]}."
        )
    return tuple(dims)


def set_reference_input_shape(model: tf.keras.Model, input_shape) -> dict[str, tuple]:
    """Count the costs of every PaBT layer of a model at model input shape `input_shape`.

    For a model built on `Input((None, None, C))`: each PaBT layer's input shape at that
    size is found by tracing the model once (no computation) and stored as the layer's
    reference (`PaBTLayer.set_reference_input_shape`), which MACs, `mean_binary_convs`,
    `summary`, the MAC-weighted ranking and the latency budget use.

    # Arguments
        model: a built single-input model with PaBT layers.
        input_shape: the model's input shape, with or without the batch
            (`(1, 360, 480, 3)` or `(360, 480, 3)`).

    # Returns
        `{layer name: its reference input shape}`.

    # Raises
        ValueError: see `deploy_input_shape`; a model without PaBT layers, or one whose
            PaBT layers are not all called when the model runs.
    """
    from pabt_tf.layers.reference_shape import recording_input_shapes

    layers = pabt_layers(model)
    if not layers:
        raise ValueError(f"Model {model.name!r} has no PaBT layers.")
    shape = deploy_input_shape(model, input_shape, "input_shape")
    spec = tf.TensorSpec(shape, model.inputs[0].dtype)
    with recording_input_shapes() as seen:
        tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    missing = [layer.name for layer in layers if id(layer) not in seen]
    if missing:
        raise ValueError(f"PaBT layers {missing} are not called by model {model.name!r}.")
    for layer in layers:
        layer.set_reference_input_shape(seen[id(layer)])
    return {layer.name: layer.reference_input_shape for layer in layers}


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


def summary(
    model: tf.keras.Model,
    print_fn: Callable[[str], Any] | None = print,
    latency_table: Any = None,
) -> list[dict]:
    """Per-layer cost table of a model's PaBT layers.

    Columns: layer, bases `M×N`, active binary convolutions, effective bits (= active
    binary convolutions, i.e. weight bits × activation bits in use; the weight and
    activation bits are the bases still used), 1-bit MACs of the active binary
    convolutions and the BOPs they amount to (per example). The last row is the total,
    with the model's `mean_binary_convs` (1.0 = a BNN).

    # Arguments
        model: a built model containing PaBT layers (nested models are searched).
        print_fn: prints each line of the table; `None` to only return the rows.
        latency_table: a `pabt_tf.LatencyTable` of this model (or its dict or JSON
            path): adds each layer's predicted LCE latency at its current mask
            (`predicted_ms`) and, in the total row, the network's (`predicted_ms`,
            the layers plus the rest of the network) and the table's source.

    # Returns
        The rows as a list of dicts, one per PaBT layer (keys `layer`, `type`,
        `weight_bases`, `activation_bases`, `binary_convs`, `active_binary_convs`,
        `weight_bits`, `activation_bits`, `effective_bits`, `binary_conv_macs`,
        `binary_macs`, `bops`), then a total row (`layer="Total"`, the sums, and
        `mean_binary_convs`).

    # Raises
        ValueError: if the model has no built PaBT layers, or the latency table does not
            match it (naming the layer).
    """
    layers = pabt_layers(model)
    if not layers or not all(layer.built for layer in layers):
        raise ValueError(f"Model {model.name!r} has no built PaBT layers to summarize.")
    table = None
    if latency_table is not None:
        from pabt_tf.export.latency_tables import LatencyTable

        table = LatencyTable.coerce(latency_table)
        table.check_model(model)
    rows = [_layer_row(layer) for layer in layers]
    keys = ("binary_convs", "active_binary_convs", "binary_macs", "bops")
    total = {"layer": "Total", **{k: sum(r[k] for r in rows) for k in keys}}
    total["mean_binary_convs"] = mean_binary_convs(model)
    if table is not None:
        for row, layer, entry in zip(rows, layers, table.layers):
            mask = layer.binary_conv_mask
            row["predicted_ms"] = entry.ms(int(mask.sum()), int(mask.any(axis=0).sum()))
        total["predicted_ms"] = table.predict_masks([layer.binary_conv_mask for layer in layers])
        total["rest_ms"] = table.rest_ms
    rows.append(total)
    if print_fn is not None:
        header = ("Layer", "Bases M×N", "Active convs", "Eff. bits (W×A)", "Binary MACs", "BOPs")
        if table is not None:
            header += ("Predicted ms",)
        lines = [header]
        for r in rows[:-1]:
            lines.append(
                (
                    r["layer"],
                    f"{r['weight_bases']}×{r['activation_bases']}",
                    f"{r['active_binary_convs']}/{r['binary_convs']}",
                    f"{r['effective_bits']} ({r['weight_bits']}×{r['activation_bits']})",
                    f"{r['binary_macs']:,}",
                    f"{r['bops']:,}",
                    *([f"{r['predicted_ms']:.3f}"] if table is not None else []),
                )
            )
        lines.append(
            (
                "Total",
                "",
                f"{total['active_binary_convs']}/{total['binary_convs']}",
                "",
                f"{total['binary_macs']:,}",
                f"{total['bops']:,}",
                *([f"{total['predicted_ms']:.3f}"] if table is not None else []),
            )
        )
        widths = [max(len(str(row[i])) for row in lines) for i in range(len(header))]

        def line(row):
            cells = [str(c).ljust(w) if i == 0 else str(c).rjust(w)
                     for i, (c, w) in enumerate(zip(row, widths))]
            return "  ".join(cells)

        rule = "-" * len(line(header))
        print_fn(f"{model.name}: PaBT layers (per example)")
        print_fn(line(header))
        print_fn(rule)
        for row in lines[1:-1]:
            print_fn(line(row))
        print_fn(rule)
        print_fn(line(lines[-1]))
        print_fn(f"Mean active binary convolutions (MAC-weighted): {total['mean_binary_convs']:.3f}"
                 " (1.0 = BNN)")
        if table is not None:
            print_fn(f"Predicted LCE latency: {total['predicted_ms']:.3f} ms (layers + "
                     f"{table.rest_ms:.3f} ms rest; {table.source}, {table.kernels}, "
                     f"{table.threads} thread(s))")
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
