"""Turn a Keras/Larq model into a PaBT model: binary layers become multi-base layers.

`from_model` is a `replace` rule over `pabt_tf.graph.rewrite_model` (the rewriter
`strip_pabt` also uses): each selected layer becomes a PaBT layer initialised from its
kernel by residual binarization; every other layer is copied with its weights.
"""

from __future__ import annotations

import warnings
from typing import Callable

import larq as lq
import numpy as np
import tensorflow as tf

from pabt_tf.binary_layers import is_binary_layer, is_binary_quantizer
from pabt_tf.graph import NodeContext, all_layers, rewrite_model
from pabt_tf.layers import PaBTConv2D, PaBTDense, PaBTLayer
from pabt_tf.quantizers import get_binary_quantizer
from pabt_tf.training import PaBTModel

__all__ = ["from_model", "residual_binarization", "sign_scale"]

# Larq layers with binary operands that have no PaBT counterpart: left alone they would
# silently stay single-base, so converting a model that has them binary is an error.
_UNSUPPORTED_BINARY = (
    lq.layers.QuantConv1D,
    lq.layers.QuantConv3D,
    lq.layers.QuantConv2DTranspose,
    lq.layers.QuantConv3DTranspose,
    lq.layers.QuantDepthwiseConv2D,
    lq.layers.QuantSeparableConv1D,
    lq.layers.QuantSeparableConv2D,
    lq.layers.QuantLocallyConnected1D,
    lq.layers.QuantLocallyConnected2D,
)


def _is_conv2d(layer) -> bool:
    return isinstance(layer, tf.keras.layers.Conv2D) and not isinstance(
        layer, tf.keras.layers.Conv2DTranspose
    )


def _is_dense(layer) -> bool:
    return isinstance(layer, tf.keras.layers.Dense)


def sign_scale(layer: tf.keras.layers.Layer) -> np.ndarray | None:
    """Per-output-channel scale `s` if the layer's kernel quantizer is a *scaled* sign.

    Bi-Real Net's `magnitude_aware_sign` and XNOR-Net style quantizers compute
    `s_o · sign(W)` with `s_o > 0` per output channel (e.g. the mean magnitude); LCE
    converts them to an `LceBconv2d` with `s` fused into its output multiplier. Decided
    from what the quantizer computes on the layer's own kernel, so any such quantizer (a
    Larq one or a plain function) is recognised.

    # Returns
        `s` of shape `(out,)`, or None when the quantizer is absent, a plain sign (s = 1),
        or not of this form.
    """
    quantizer = getattr(layer, "kernel_quantizer", None)
    kernel = getattr(layer, "kernel", None)
    if quantizer is None or kernel is None or isinstance(quantizer, lq.quantizers.NoOp):
        return None
    w = np.asarray(tf.keras.backend.get_value(_latent(kernel)), np.float32)
    try:
        with tf.init_scope():
            out = np.asarray(quantizer(tf.constant(w)), np.float32)
    except Exception:  # not a function of the kernel alone: not a scaled sign
        return None
    if out.shape != w.shape:
        return None
    scale = np.abs(out).reshape(-1, w.shape[-1]).max(axis=0)
    sign = np.where(w >= 0, 1.0, -1.0)
    if not np.all(scale > 0) or not np.allclose(out, sign * scale, rtol=1e-5, atol=0.0):
        return None
    return None if np.allclose(scale, 1.0) else scale.astype(np.float32)


def _binary_input(layer) -> bool:
    q = getattr(layer, "input_quantizer", None)
    return q is not None and getattr(q, "precision", None) == 1


def residual_binarization(kernel: np.ndarray, bases: int, seed: int = 0):
    """Greedy residual binarization of a kernel, per output channel (last axis).

    `B_0 = sign(W)`, `a_0 = mean|W|`; then `B_m = sign(R_m)`, `a_m = mean|R_m|` of the
    residual `R_m = W − Σ_{k<m} a_k B_k`. Exact zeros of a residual (e.g. every
    residual of an already ±1 kernel) get random signs, so no base is constant.

    # Arguments
        kernel: real kernel `W`, shape `(..., out)`.
        bases: number of bases `M ≥ 1`.
        seed: seed of those random signs.

    # Returns
        `(B, alpha, residuals)`: `B` `(M, *W.shape)` of ±1; `alpha` `(M, out)` with
        `alpha[0] = 1` and `alpha[m] = a_m / a_0`, so base 0 keeps a BNN's ±1 scale;
        `residuals` `(M, *W.shape)`, `R_0 = W`, with each zero replaced by a tiny
        value of its base's sign (`sign(residuals[m]) == B[m]`).
    """
    w = np.asarray(kernel, np.float64)
    rng = np.random.default_rng(seed)
    axes = tuple(range(w.ndim - 1))
    r = w.copy()
    B, a, R = [], [], []
    for m in range(bases):
        b = np.where(r >= 0, 1.0, -1.0)
        zero = r == 0
        if m > 0 and zero.any():
            b[zero] = rng.choice([-1.0, 1.0], size=int(zero.sum()))
        B.append(b)
        R.append(np.where(zero, 1e-3 * b, r) if m > 0 else r.copy())
        a.append(np.abs(r).mean(axis=axes))
        r = r - a[-1] * b
    a = np.stack(a)  # (M, out)
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.where(a[0] > 0, a / a[0], 0.0)
    for m in range(1, bases):  # a residual that vanished: halve the previous scale
        alpha[m] = np.where(alpha[m] > 0, alpha[m], 0.5 * alpha[m - 1])
    alpha[0] = 1.0
    return (np.stack(B).astype(np.float32), alpha.astype(np.float32),
            np.stack(R).astype(np.float32))


def _abc_scales(layer: PaBTLayer, kernel: np.ndarray) -> np.ndarray:
    """Least-squares α of ABC-Net (`W ≈ Σ α_m B_m` per output channel), divided by
    mean|W| so the bases keep a BNN's ±1 scale; clipped at 0 (α is non-negative)."""
    B = np.asarray(layer.kernel_quantizer(tf.constant(kernel)), np.float64)
    M, out = B.shape[0], kernel.shape[-1]
    B = B.reshape(M, -1, out)
    w = kernel.reshape(-1, out).astype(np.float64)
    gram = np.einsum("mpo,npo->omn", B, B) + 1e-9 * np.eye(M)
    rhs = np.einsum("mpo,po->om", B, w)
    alpha = np.linalg.solve(gram, rhs[..., None])[..., 0].T  # (M, out)
    scale = np.abs(w).mean(axis=0)
    alpha = np.where(scale > 0, alpha / np.where(scale > 0, scale, 1.0), 1.0)
    return np.maximum(alpha, 0.0).astype(np.float32)


def _initialise(new: PaBTLayer, old: tf.keras.layers.Layer) -> None:
    """PaBT weights from the original layer's kernel (and bias); a scaled-sign kernel's
    per-channel magnitude goes into the scales α."""
    kernel = np.asarray(tf.keras.backend.get_value(_latent(old.kernel)), np.float32)
    magnitude = sign_scale(old)
    magnitude = 1.0 if magnitude is None else magnitude[None, :]
    if new.bases == "abc":
        new.kernel.assign(kernel)
        new.scale.assign(_abc_scales(new, kernel) * magnitude)
    else:
        B, alpha, residuals = residual_binarization(kernel, new.weight_bases)
        values = residuals if new.latent_weights else B
        for variable, value in zip(new.kernels, values):
            _latent(variable).assign(value)
        new.scale.assign(alpha * magnitude)
    if new.use_bias:
        new.bias.assign(tf.keras.backend.get_value(old.bias))


def _latent(variable):
    return getattr(variable, "latent_variable", variable)


def _replacement(
    layer: tf.keras.layers.Layer,
    weight_bases: int,
    activation_bases: int,
    latent_weights: bool,
    bases: str,
    layer_kwargs: dict,
) -> PaBTLayer:
    """The PaBT layer replacing `layer` (unbuilt), or a ValueError naming it."""
    name = layer.name

    def fail(why: str):
        raise ValueError(f"from_model: layer {name!r} ({type(layer).__name__}) {why}")

    if not (_is_conv2d(layer) or _is_dense(layer)):
        fail(
            "cannot become a PaBT layer: only Conv2D/QuantConv2D (2D, groups=1, "
            "channels_last) and Dense/QuantDense layers can."
        )
    kwargs = dict(layer_kwargs)
    input_quantizer = getattr(layer, "input_quantizer", None)
    kernel_quantizer = getattr(layer, "kernel_quantizer", None)
    if input_quantizer is not None and "activation_quantizer" not in kwargs:
        try:
            kwargs["activation_quantizer"] = get_binary_quantizer(
                input_quantizer, "input_quantizer"
            )
        except ValueError as err:
            fail(f"has an input quantizer that is not a sign: {err}")
    if (
        kernel_quantizer is not None
        and not isinstance(kernel_quantizer, lq.quantizers.NoOp)
        and bases == "independent"
        and latent_weights
        and "kernel_quantizer" not in kwargs
    ):
        try:
            kwargs["kernel_quantizer"] = get_binary_quantizer(
                kernel_quantizer, "kernel_quantizer"
            )
        except ValueError as err:
            if sign_scale(layer) is None:
                fail(f"has a kernel quantizer that is not a sign: {err}")
            # A scaled sign (Bi-Real, XNOR-Net): B = sign(W) with a straight-through
            # gradient; the magnitude becomes α (see `_initialise`).
            kwargs["kernel_quantizer"] = "ste_sign"
    elif isinstance(kernel_quantizer, lq.quantizers.NoOp) and kernel_quantizer.precision != 1:
        fail("has a NoOp kernel quantizer without precision=1.")
    common = dict(
        weight_bases=weight_bases,
        activation_bases=activation_bases,
        bases=bases,
        latent_weights=latent_weights,
        use_bias=layer.use_bias,
        activation=tf.keras.activations.serialize(layer.activation),
        name=name,
    )
    common.update(kwargs)
    if _is_conv2d(layer):
        if getattr(layer, "groups", 1) != 1:
            fail(f"has groups={layer.groups}; only groups=1 is supported.")
        if layer.data_format != "channels_last":
            fail(f"has data_format={layer.data_format!r}; only 'channels_last' is supported.")
        if layer.padding not in ("same", "valid"):
            fail(f"has padding={layer.padding!r}; only 'same' and 'valid' are supported.")
        pad_values = getattr(layer, "pad_values", 0.0)
        if layer.padding == "same" and input_quantizer is not None and pad_values != 1.0:
            warnings.warn(
                f"from_model: layer {name!r} pads its binarized input with "
                f"{pad_values}; PaBT layers pad with +1 (Larq pad_values=1.0, what LCE "
                "computes exactly), so outputs at the borders change.",
                stacklevel=3,
            )
        return PaBTConv2D(
            layer.filters,
            layer.kernel_size,
            strides=layer.strides,
            padding=layer.padding,
            dilation_rate=layer.dilation_rate,
            **common,
        )
    return PaBTDense(layer.units, **common)


def _selected(layer, predicate) -> bool:
    if isinstance(layer, tf.keras.Model):
        return False
    if predicate is not None:
        return bool(predicate(layer))
    if not is_binary_layer(layer) and not (_binary_input(layer) and sign_scale(layer) is not None):
        return False
    if isinstance(layer, _UNSUPPORTED_BINARY) or not (_is_conv2d(layer) or _is_dense(layer)):
        raise ValueError(
            f"from_model: layer {layer.name!r} ({type(layer).__name__}) is binary but has "
            "no PaBT counterpart (depthwise, separable, transposed, 1D/3D and locally "
            "connected binary layers are not supported); only QuantConv2D and "
            "QuantDense layers can be converted."
        )
    return True


_QUANTIZER_ATTRIBUTES = ("input_quantizer", "kernel_quantizer", "depthwise_quantizer",
                         "pointwise_quantizer")  # fmt: skip


def _describe(quantizer) -> str:
    if quantizer is None:
        return "None (float)"
    precision = getattr(quantizer, "precision", None)
    name = getattr(quantizer, "__name__", None) or type(quantizer).__name__
    return f"{name} ({'precision ' + str(precision) if precision is not None else 'no precision'})"


def _note_partly_binary(model: tf.keras.Model, converted: dict) -> None:
    """Warn about every Larq layer with a quantizer that stays as it is because it is not
    binary on both sides (input and a weight 1-bit): LCE runs such a layer in float, as
    it does a binary QuantDense (`ConversionReport.notes`), so it must not pass silently."""
    for layer in all_layers(model):
        if id(layer) in converted or isinstance(layer, (tf.keras.Model, PaBTLayer)):
            continue
        quantizers = {a: getattr(layer, a) for a in _QUANTIZER_ATTRIBUTES if hasattr(layer, a)}
        if not any(q is not None for q in quantizers.values()) or is_binary_layer(layer):
            continue
        sides = ", ".join(f"{a}={_describe(q)}" for a, q in quantizers.items())
        missing = [a for a, q in quantizers.items() if not is_binary_quantizer(q)]
        warnings.warn(
            f"from_model: layer {layer.name!r} ({type(layer).__name__}) is not binary on "
            f"both sides ({sides}; not 1-bit: {', '.join(missing)}): it stays as it is, a "
            "float layer for LCE, not a PaBT layer. Give it 1-bit input and kernel "
            "quantizers (e.g. 'ste_sign') to convert it, or choose layers with `predicate`.",
            stacklevel=3,
        )


def _check_nested(model: tf.keras.Model, predicate) -> None:
    for layer in model.layers:
        if isinstance(layer, tf.keras.Model):
            for inner in all_layers(layer):
                if _selected(inner, predicate):
                    raise ValueError(
                        f"from_model: layer {inner.name!r} to convert is inside the nested "
                        f"model {layer.name!r}; convert that model on its own (or flatten "
                        "it into the outer model) first."
                    )


def from_model(
    model: tf.keras.Model,
    weight_bases: int = 3,
    activation_bases: int = 3,
    latent_weights: bool = True,
    bases: str = "independent",
    predicate: Callable[[tf.keras.layers.Layer], bool] | None = None,
    **layer_kwargs,
):
    """Rebuild a Sequential or Functional Keras/Larq model as a `PaBTModel`.

    Every binary layer — a Larq `QuantConv2D`/`QuantDense` whose `input_quantizer` and
    `kernel_quantizer` are binary (`precision == 1`, e.g. `"ste_sign"`, or a
    latent-weight-free `NoOp(precision=1)` kernel) — or, with `predicate`, every layer
    for which `predicate(layer)` is true, becomes a `PaBTConv2D`/`PaBTDense` of the same
    name and geometry (filters, kernel size, strides, padding, dilation, bias,
    activation), initialised from its kernel by greedy residual binarization
    (`residual_binarization`): `B_0 = sign(W)` with `α_0 = 1`, so base 0 is the
    original binary kernel at its ±1 scale, and `B_m` binarizes what the previous
    bases leave of `W`, with `α_m` relative to base 0. With `latent_weights=True`
    the latent kernels hold `W` and the residuals; with `bases="abc"` the latent
    kernel is `W` and `α` is ABC-Net's least-squares fit. The bias is copied; the
    original input quantizer's pseudo-gradient is kept. All other layers keep their
    weights.

    With `weight_bases = activation_bases = 1` the result computes exactly the
    original BNN when that padded its binarized inputs with +1 (`pad_values=1.0`).

    A Larq layer that is quantized but not binary on both sides (e.g. binary weights on
    float inputs, or a 2-bit quantizer) is not a binary convolution: it stays as it is,
    float for LCE, with a `UserWarning` naming it and its quantizers.

    # Arguments
        model: a `tf.keras.Sequential` or functional `tf.keras.Model`, built.
        weight_bases, activation_bases, latent_weights, bases: of the new PaBT layers.
        predicate: `layer -> bool` choosing the layers to convert instead of the
            default rule (e.g. to convert float `Conv2D` layers).
        **layer_kwargs: more PaBT layer arguments (e.g. `per_channel_thresholds=True`,
            `activation_quantizer="approx_sign"`).

    # Returns
        A `pabt_tf.PaBTModel` with the same inputs, outputs and name.

    # Raises
        ValueError: for a subclassed or unbuilt model, a model without layers to
            convert, or a layer that cannot be converted (unsupported type, groups,
            data format, padding, non-sign quantizer, inside a nested model) — the
            message names the layer.
    """
    if not isinstance(model, tf.keras.Model):
        raise ValueError(f"from_model: `model` must be a tf.keras.Model, got {type(model).__name__}.")
    is_sequential = isinstance(model, tf.keras.Sequential)
    if not is_sequential and not getattr(model, "_is_graph_network", False):
        raise ValueError(
            f"from_model: model {model.name!r} ({type(model).__name__}) is a subclassed "
            "model; only Sequential and functional models can be cloned layer by layer."
        )
    if not model.built or not model.inputs:
        raise ValueError(
            f"from_model: model {model.name!r} must be built with a known input shape "
            "(give it an Input or call it on data first)."
        )
    if predicate is not None and not callable(predicate):
        raise ValueError(f"from_model: `predicate` must be callable, got {predicate!r}.")
    _check_nested(model, predicate)

    # Every replacement is made (and checked) before the graph is rebuilt, so a model
    # with a layer that cannot be converted fails before any work, naming the layer.
    replacements: dict[int, PaBTLayer] = {
        id(layer): _replacement(
            layer, weight_bases, activation_bases, latent_weights, bases, layer_kwargs
        )
        for layer in model.layers
        if _selected(layer, predicate)
    }
    if predicate is None:
        _note_partly_binary(model, replacements)
    if not replacements:
        raise ValueError(
            f"from_model: model {model.name!r} has no layers to convert (no QuantConv2D/"
            "QuantDense with binary input and kernel quantizers"
            + (", and `predicate` selected none" if predicate is not None else "")
            + ")."
        )

    def replace(layer: tf.keras.layers.Layer, x, context: NodeContext | None):
        new = replacements.get(id(layer))
        if new is None:
            return None
        initialise = not new.built
        y = new(x)  # a shared layer's later calls reuse the same PaBT layer
        if initialise:
            _initialise(new, layer)
        return y

    # Nested models (which hold nothing to convert) are copied whole, not inlined.
    return rewrite_model(model, replace, model.name, inline_nested=False, model_class=PaBTModel)
