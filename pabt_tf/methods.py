"""Binarization methods: what one binary position of a zoo network is, per method, and
the optimizer that trains it.

- `"pabt"`: `PaBTConv2D` with `M` independent weight bases and `N` activation bases
  (latent or latent-weight-free), pruned to a BNN by a `PaBTPruningCallback`;
- `"abc"`: ABC-Net, the same multi-base layers with `bases="abc"` (`abc_bases=(M, N)`,
  3/3 by default), never pruned;
- `"bnn"`: Larq `QuantConv2D`, `ste_sign` input and kernel quantizers, `weight_clip`,
  `pad_values=1.0` (straight-through latent-weight BNN);
- `"bnn_bireal"`: Bi-Real Net's BNN: `approx_sign` (piecewise-polynomial pseudo-gradient)
  on activations, `magnitude_aware_sign` kernels (sign times the per-output-channel mean
  magnitude), `weight_clip`, `pad_values=1.0` — LCE fuses the magnitude into its
  `LceBconv2d` output multiplier;
- `"bnn_bop"`: the STE BNN's layer with ±1 kernels (`NoOp(precision=1)`) trained by Bop;
- `"float"`: `Conv2D` with a ReLU on its input where the others binarize it.
"""

from __future__ import annotations

from typing import Any, Callable

import larq as lq
import tensorflow as tf

from pabt_tf.layers import PaBTConv2D
from pabt_tf.quantizers import RandomSign

__all__ = ["METHODS", "BinaryPositions", "binary_conv", "check_method", "get_optimizer", "uses_bop"]

METHODS = ("pabt", "abc", "bnn", "bnn_bireal", "bnn_bop", "float")
_LAYERS = tf.keras.layers


# The Larq BNN baselines: quantizers and constraint/initializer of their binary layer
# (functions, so every layer gets its own quantizer objects).
_LARQ_BNN: dict[str, Callable[[], dict[str, Any]]] = {
    "bnn": lambda: dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                        kernel_constraint="weight_clip"),
    "bnn_bireal": lambda: dict(input_quantizer="approx_sign", kernel_quantizer="magnitude_aware_sign",
                               kernel_constraint="weight_clip"),
    "bnn_bop": lambda: dict(input_quantizer="ste_sign", kernel_quantizer=lq.quantizers.NoOp(precision=1),
                            kernel_initializer=RandomSign()),
}  # fmt: skip


def _abc_bases(bases: Any) -> tuple[int, int]:
    try:
        m, n = (int(v) for v in bases)
        ok = [m, n] == list(bases) and m >= 1 and n >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"`abc_bases` must be two positive integers (M, N), got {bases!r}.")
    return m, n


def _check_activation_quantizer(method: str, activation_quantizer: Any) -> None:
    if activation_quantizer is not None and method not in ("pabt", "abc"):
        raise ValueError(
            f"`activation_quantizer` applies to the multi-base methods 'pabt' and 'abc' only "
            f"(method {method!r} defines its own quantizers), got {activation_quantizer!r}."
        )


def check_method(method: Any) -> str:
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}.")
    return method


def uses_bop(method: str, latent_weights: bool = True) -> bool:
    """Whether `method` trains ±1 kernels with Bop (needs `get_optimizer`'s CaseOptimizer)."""
    check_method(method)
    return method == "bnn_bop" or (method == "pabt" and not latent_weights)


class BinaryPositions:
    """Creates a network's binary positions for one method, named `bconv_<i>` in order."""

    def __init__(
        self,
        method: str,
        weight_bases: int = 3,
        activation_bases: int = 3,
        latent_weights: bool = True,
        float_activation: str = "relu",
        per_channel_thresholds: bool = False,
        threshold_spread: float = 0.5,
        abc_bases: tuple[int, int] = (3, 3),
        activation_quantizer: Any = None,
    ):
        self.method = check_method(method)
        _check_activation_quantizer(method, activation_quantizer)
        if method == "abc":  # ABC-Net: its own (M, N), always latent weights
            weight_bases, activation_bases, latent_weights = _abc_bases(abc_bases) + (True,)
        if not isinstance(latent_weights, bool):
            raise ValueError(f"`latent_weights` must be a bool, got {latent_weights!r}.")
        self.weight_bases = weight_bases
        self.activation_bases = activation_bases
        self.latent_weights = latent_weights
        self.float_activation = float_activation
        self.per_channel_thresholds = per_channel_thresholds
        self.threshold_spread = threshold_spread
        self.activation_quantizer = activation_quantizer
        self.count = 0

    def conv(self, filters: int, kernel_size: int = 3, strides: int = 1, padding: str = "same"):
        """A binary position: `x -> conv(x)` (input binarization included)."""
        name = f"bconv_{self.count}"
        self.count += 1
        return binary_conv(
            self.method,
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            weight_bases=self.weight_bases,
            activation_bases=self.activation_bases,
            latent_weights=self.latent_weights,
            float_activation=self.float_activation,
            per_channel_thresholds=self.per_channel_thresholds,
            threshold_spread=self.threshold_spread,
            abc_bases=(self.weight_bases, self.activation_bases),
            activation_quantizer=self.activation_quantizer,
            name=name,
        )


def binary_conv(
    method: str,
    filters: int,
    kernel_size: int = 3,
    strides: int = 1,
    padding: str = "same",
    weight_bases: int = 3,
    activation_bases: int = 3,
    latent_weights: bool = True,
    float_activation: str = "relu",
    per_channel_thresholds: bool = False,
    threshold_spread: float = 0.5,
    abc_bases: tuple[int, int] = (3, 3),
    activation_quantizer: Any = None,
    name: str | None = None,
) -> Callable[[tf.Tensor], tf.Tensor]:
    """One binary convolution position for `method` (no bias; add BatchNorm after it).

    # Arguments
        weight_bases, activation_bases, latent_weights: PaBT's `M`, `N` and weight storage.
        abc_bases: ABC-Net's `(M, N)` (method `"abc"`, which ignores `weight_bases` and
            `activation_bases` and always uses latent weights).
        activation_quantizer: the multi-base layers' activation pseudo-gradient
            (methods `"pabt"` and `"abc"`; `None`: the layer's default `"ste_sign"`,
            `"approx_sign"`: Bi-Real's). The Larq BNN baselines' quantizers are their
            method's definition, so they refuse it.

    # Returns
        A function `x -> y` applying the layer (and, for `"float"`, the ReLU before it).

    # Raises
        ValueError: on an unknown method, or `activation_quantizer` for a method without
            multi-base layers.
    """
    check_method(method)
    _check_activation_quantizer(method, activation_quantizer)
    common = dict(strides=strides, padding=padding, use_bias=False, name=name)
    if method == "abc":
        weight_bases, activation_bases = _abc_bases(abc_bases)
    if method in ("pabt", "abc"):
        layer = PaBTConv2D(
            filters,
            kernel_size,
            weight_bases=weight_bases,
            activation_bases=activation_bases,
            bases="abc" if method == "abc" else "independent",
            latent_weights=True if method == "abc" else latent_weights,
            per_channel_thresholds=per_channel_thresholds,
            threshold_spread=threshold_spread,
            **({} if activation_quantizer is None else {"activation_quantizer": activation_quantizer}),
            **common,
        )
    elif method in _LARQ_BNN:
        layer = lq.layers.QuantConv2D(filters, kernel_size, pad_values=1.0, **_LARQ_BNN[method](), **common)
    else:
        layer = _LAYERS.Conv2D(filters, kernel_size, **common)
        if float_activation:
            activation = _LAYERS.Activation(float_activation, name=f"act_{name}" if name else None)
            return lambda x: layer(activation(x))
    return layer


def get_optimizer(
    method: str,
    learning_rate: float | tf.keras.optimizers.schedules.LearningRateSchedule = 1e-3,
    latent_weights: bool = True,
    bop_threshold: float = 1e-8,
    bop_gamma: float | tf.keras.optimizers.schedules.LearningRateSchedule = 1e-4,
) -> tf.keras.optimizers.Optimizer:
    """The optimizer for `method`.

    Latent-weight-free methods (`"bnn_bop"`, and `"pabt"` with `latent_weights=False`)
    get `CaseOptimizer((Bop.is_binary_variable, Bop(threshold, gamma)),
    default_optimizer=legacy Adam(learning_rate))`: Bop flips the ±1 kernels, Adam
    trains everything else (scales, gates, thresholds, BN, float layers). Every other
    method gets legacy Adam (the legacy optimizers are what `CaseOptimizer` needs; using
    them everywhere keeps the comparison fair).

    # Raises
        ValueError: on an unknown method.
    """
    adam = tf.keras.optimizers.legacy.Adam(learning_rate)
    if uses_bop(method, latent_weights):
        return lq.optimizers.CaseOptimizer(
            (lq.optimizers.Bop.is_binary_variable, lq.optimizers.Bop(bop_threshold, bop_gamma)),
            default_optimizer=adam,
        )
    return adam
