"""Cost accounting for PaBT networks: effective bit-width and binary MACs."""

from __future__ import annotations

import tensorflow as tf

from pabt_tf.layers import pabt_layers

__all__ = ["mean_binary_convs"]


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
