"""Strip a PaBT model: the plain Keras/Larq model LCE converts, computing the same function.

DESIGN.md §1.4. Every PaBT layer becomes the sum of its *active* binary convolutions,
written the way LCE recognises a binary convolution. The *fused* export
(`strip_pabt(model, fused=True)`) runs each active activation base `n` through one shift
and, for its active weight bases, concatenated binary convolutions:

    ThresholdShift (x − θ_n) → larq QuantConv2D(ste_sign, ste_sign, pad_values=1,
        kernel = [B_m1 | B_m2 | …], k·C_out filters) → ChannelScale ([c_m1n·α_m1 | …])
        → ChannelGroupSum (k groups)

LCE makes it one `LceQuantize` (the bit-packing of `x − θ_n`) and one `LceBconv2d` with
the scales fused into its output multiplier; the branches are then summed by a chain of
`ADD`s. Weight bases are fused together when they are active on the same set of
activation bases: their concatenated kernel is then the same constant on each of those
bases, stored once (as the separate kernels of the unfused export are: the converter
merges equal constants). So an activation base gets *one* binary convolution whenever
its weight bases are not shared with other bases differently (a BNN, k ≤ M on one base,
all M·N active, ...); fusing weight bases with different sets would store a kernel twice
(measured, 4 × 128-channel 3×3 layers: 481 kB instead of 261 kB for 6 of 9 active in
the "spread" pattern) for no speed gain. With `fused=False` (the default: the export
before issue 10, which the fused one does not beat on this host, below) every active
`(m, n)` is its own `QuantConv2D` of `C_out` filters. Both give the same layers when no
weight bases can be fused (a bias aside: fused, it is added in the first branch, where
LCE fuses it), in particular for a BNN (exactly a hand-written Larq BNN).

How the groups are summed (measured here, LCE interpreter, x86, indirect BGEMM, 1 thread,
k = 2 and 3 groups): in context (the layer, its BatchNorm and the next layer's bconv; CPU
time over 5 shapes from 128 ch × 56² to 512 ch × 7²) relative to the unfused graph,
`RESHAPE` to `(…, k, C)` + `SUM` over the group axis 0.96–1.035 (mean 1.003), `SPLIT` +
`ADD`s 0.99–1.025 (1.013), `STRIDED_SLICE`s + `ADD`s 1.00–1.025 (1.016); in the 4-layer
128-channel 56×56 network, `RESHAPE` + `SUM` 0.98–1.04, `SPLIT` + `ADD`s 1.02–1.05. A
1×1 float `CONV_2D` with stacked identity kernels (which would absorb a following
BatchNorm) cost 3–6× the `SPLIT` + `ADD`s alone, and `ADD_N` 1.3–1.6× a chain of `ADD`s.
`RESHAPE` + `SUM` is kept: the fewest ops (2 whatever k) and the best in context. None
beats the unfused graph by more than the noise on this host: LCE's x86 kernel is linear
in the output channels and the unfused export already shares one `LceQuantize` per
activation base (LCE merges equal ones); fusion saves operators (and their per-op cost
on a board, unmeasured here).

Pruned binary convolutions are removed from the graph (a zero-scaled kernel would make
LCE fall back to a float convolution). `PaBTDense` becomes a 1×1 binary convolution on an
input reshaped to `(P, 1, C)` *before* the shift, because a reshape between the sign and
the convolution makes LCE emit a float convolution. The graph is rebuilt by
`pabt_tf.graph.rewrite_model`; the layers it is made of are in
`pabt_tf.export.stripped_layers`.
"""

from __future__ import annotations

import re
from typing import Sequence

import larq as lq
import numpy as np
import tensorflow as tf

from pabt_tf.costs import deploy_input_shape
from pabt_tf.export.stripped_layers import (
    ChannelBias,
    ChannelGroupSum,
    ChannelScale,
    DilatedQuantConv2D,
    ThresholdShift,
)
from pabt_tf.graph import NodeContext, _GraphRewriter, rewrite_model
from pabt_tf.layers import PaBTConv2D, PaBTDense, PaBTLayer, pabt_layers

__all__ = [
    "ThresholdShift",
    "ChannelScale",
    "ChannelBias",
    "ChannelGroupSum",
    "DilatedQuantConv2D",
    "strip_pabt",
    "bconv_name",
    "parse_bconv_name",
    "bconv_owner",
    "bconv_count",
]

# "<pabt layer>/m<m>n<n>_bconv" (one binary convolution) or, for a fused one,
# "<pabt layer>/m<m1>_<m2>…n<n>_bconv" (weight bases m1, m2, … on activation base n).
_BCONV_NAME = re.compile(r"^(?P<owner>.+)/m(?P<ms>\d+(?:_\d+)*)n(?P<n>\d+)_bconv$")


def bconv_name(owner: str, weight_bases: Sequence[int], n: int) -> str:
    """The name `strip_pabt` gives the binary convolution computing weight bases
    `weight_bases` of PaBT layer `owner` on its activation base `n`:
    `"<owner>/m<m>n<n>_bconv"` for one, `"<owner>/m0_2n1_bconv"` for bases 0 and 2."""
    if not weight_bases:
        raise ValueError("`weight_bases` must not be empty.")
    return f"{owner}/m{'_'.join(str(int(m)) for m in weight_bases)}n{int(n)}_bconv"


def parse_bconv_name(name: str) -> tuple[str, tuple[int, ...], int] | None:
    """`(owner, weight_bases, n)` of a binary convolution named by `bconv_name`, or None
    for any other name (e.g. a hand-written Larq layer)."""
    match = _BCONV_NAME.match(name)
    if match is None:
        return None
    ms = tuple(int(m) for m in match.group("ms").split("_"))
    return match.group("owner"), ms, int(match.group("n"))


def bconv_owner(name: str) -> str:
    """The PaBT layer a binary convolution of a stripped model came from, read from its
    name (`bconv_name`); any other name is returned unchanged (a Larq layer owns itself)."""
    parsed = parse_bconv_name(name)
    return parsed[0] if parsed else name


def bconv_count(name: str) -> int:
    """How many of its owner's binary convolutions a (possibly fused) binary convolution
    layer computes: the number of weight bases in its name, 1 for any other name."""
    parsed = parse_bconv_name(name)
    return len(parsed[1]) if parsed else 1


# --------------------------------------------------------------------------------------
# The rewrite rule: one PaBT layer → its active binary convolutions
# --------------------------------------------------------------------------------------


def _check_sign_forward(quantizer, what: str, layer_name: str) -> None:
    """LCE's binary ops compute sign (+1 at 0); a 1-bit quantizer with another forward
    (e.g. a Heaviside step) cannot be exported as one."""
    probe = tf.constant([-2.0, -0.5, 0.0, 0.5, 2.0])
    got = np.asarray(quantizer(probe))
    if not np.array_equal(got, [-1.0, -1.0, 1.0, 1.0, 1.0]):
        raise ValueError(
            f"{layer_name}: cannot export {what} {quantizer!r}: its forward pass is not "
            f"sign(x) with sign(0) = +1 (got {got.tolist()} on [-2, -0.5, 0, 0.5, 2]); "
            "LCE binary convolutions binarize with sign."
        )


def _foldable_batchnorm(context: NodeContext | None) -> tf.keras.layers.BatchNormalization | None:
    """The copied BatchNormalization producing this layer's input, if the threshold shift
    can be folded into its beta: it feeds nothing else, is used once, normalises the last
    axis and has a beta."""
    if context is None or not context.input_is_exclusive:
        return None
    bn = context.producer_clone
    if not isinstance(bn, tf.keras.layers.BatchNormalization) or not bn.center:
        return None
    axis = bn.axis if isinstance(bn.axis, (list, tuple)) else [bn.axis]
    rank = len(context.ref_input.shape)
    original = context.ref_input._keras_history.layer
    if [a % rank for a in axis] != [rank - 1] or len(original._inbound_nodes) != 1:
        return None  # another axis, or a shared BatchNorm (its other calls need beta)
    return bn


def _binary_groups(mask: np.ndarray, fused: bool) -> list[tuple[int, list[int]]]:
    """`(n, [m, …])` per binary convolution layer to emit.

    Unfused: one per active `(m, n)`, in row-major order (the export before fusion).
    Fused: per active activation base (in order of its first active `(m, n)`), its active
    weight bases grouped by the set of activation bases each is active on (equal sets:
    one concatenated kernel, the same constant on every base of the set). A layer with
    nothing to fuse keeps the unfused order, so its graph is the unfused one.
    """
    pairs = [(int(m), int(n)) for m, n in zip(*np.nonzero(mask))]
    unfused = [(n, [m]) for m, n in pairs]
    if not fused:
        return unfused
    bases_of = {m: tuple(np.nonzero(mask[m])[0]) for m, _ in pairs}
    groups = []
    for n in dict.fromkeys(n for _, n in pairs):
        ms = [m for m, n2 in pairs if n2 == n]
        for key in dict.fromkeys(bases_of[m] for m in ms):
            groups.append((n, [m for m in ms if bases_of[m] == key]))
    return unfused if len(groups) == len(unfused) else groups


def _expand_pabt_layer(
    layer: PaBTLayer, x: tf.Tensor, context: NodeContext | None = None, fused: bool = False
) -> tf.Tensor:
    """The stripped subgraph of one PaBT layer applied to the Keras tensor `x`.

    With one active activation base and a BatchNormalization right before that feeds
    only this layer, θ_n is folded into the BatchNormalization's beta instead of a
    `ThresholdShift` (TFLite does not merge the BN's add with a following subtract, so a
    separate shift would cost an op where a hand-written Larq BNN has none).
    """
    if not layer.built:
        raise ValueError(f"{layer.name}: build the layer before stripping it.")
    _check_sign_forward(layer.input_quantizer.pseudo_gradient, "activation quantizer", layer.name)
    mask = layer.binary_conv_mask
    bases = np.asarray(layer.binary_kernels(), np.float32)  # (M, *kernel_shape)
    if not np.all(np.abs(bases) == 1.0):
        raise ValueError(
            f"{layer.name}: cannot export: its binary weight bases are not all ±1 "
            "(check `kernel_quantizer`); LCE binary convolutions need ±1 kernels."
        )
    coef = np.asarray(layer.coefficients(), np.float32)
    alpha = np.asarray(tf.keras.backend.get_value(layer.scale), np.float32)
    thresholds = np.asarray(tf.keras.backend.get_value(layer.input_quantizer.thresholds))
    per_channel = layer.input_quantizer.per_channel
    prefix = layer.name
    dense = isinstance(layer, PaBTDense)

    if dense:
        # LCE has no binary dense op: run it as a 1x1 binary conv on (P, 1, C), with the
        # reshape *before* the shift/sign (a reshape between sign and conv stays float).
        in_shape = x.shape
        if any(d is None for d in in_shape[1:]):
            raise ValueError(
                f"{layer.name}: exporting PaBTDense needs known non-batch input "
                f"dimensions, got {tuple(in_shape)}."
            )
        channels = int(in_shape[-1])
        positions = int(np.prod([int(d) for d in in_shape[1:-1]], dtype=np.int64))
        x = tf.keras.layers.Reshape((positions, 1, channels), name=f"{prefix}/to_1x1")(x)
        units = layer.units
        conv_args = dict(kernel_size=1, strides=1, padding="valid")
        bases = bases.reshape((bases.shape[0], 1, 1, channels, units))
    elif isinstance(layer, PaBTConv2D):
        units = layer.filters
        conv_args = dict(
            kernel_size=layer.kernel_size,
            strides=layer.strides,
            padding=layer.padding,
            dilation_rate=layer.dilation_rate,
        )
    else:
        raise TypeError(f"{layer.name}: no export rule for {type(layer).__name__}.")
    conv_cls = (
        DilatedQuantConv2D
        if max(conv_args.get("dilation_rate", (1, 1))) > 1
        else lq.layers.QuantConv2D
    )

    shifted: dict[int, tf.Tensor] = {}
    active_bases = sorted({int(n) for n in np.nonzero(mask)[1]})
    bn = _foldable_batchnorm(context) if not dense and len(active_bases) == 1 else None
    if bn is not None:
        (n,) = active_bases
        beta = np.asarray(tf.keras.backend.get_value(bn.beta))
        bn.beta.assign((beta - np.broadcast_to(thresholds[n], beta.shape)).astype(beta.dtype))
        shifted[n] = x
    groups = _binary_groups(mask, fused)
    # Fused, the bias joins the first binary convolution (zero on its other groups), where
    # LCE fuses it like the scale; unfused (and for one convolution, the same thing) it
    # follows the sum as before.
    bias = np.asarray(tf.keras.backend.get_value(layer.bias)) if layer.use_bias else None
    bias_in_branch = bias is not None and (fused or len(groups) == 1)
    branches = []
    for i, (n, ms) in enumerate(groups):
        if n not in shifted:  # branches with the same activation base share the shift
            shift = ThresholdShift(per_channel=per_channel, name=f"{prefix}/n{n}_shift")
            shifted[n] = shift(x)
            shift.set_weights([thresholds[n]])
        name = bconv_name(prefix, ms, n)
        stem = name[: -len("_bconv")]
        conv = conv_cls(
            filters=len(ms) * units,
            **conv_args,
            input_quantizer="ste_sign",
            kernel_quantizer="ste_sign",
            kernel_constraint="weight_clip",  # ±1 is inside the clip; silences Larq
            pad_values=1.0,
            use_bias=False,
            name=name,
        )
        y = conv(shifted[n])
        conv.set_weights([np.concatenate([bases[m] for m in ms], axis=-1)])
        scale = ChannelScale(name=f"{stem}_scale")
        y = scale(y)
        scale.set_weights([np.concatenate([coef[m, n] * alpha[m] for m in ms])])
        if bias_in_branch and i == 0:
            bias_layer = ChannelBias(name=f"{prefix}/bias")
            y = bias_layer(y)
            zeros = np.zeros((len(ms) - 1) * units, bias.dtype)
            bias_layer.set_weights([np.concatenate([bias, zeros])])
        if len(ms) > 1:
            y = ChannelGroupSum(len(ms), name=f"{stem}_sum")(y)
        branches.append(y)
    y = branches[0] if len(branches) == 1 else tf.keras.layers.Add(name=f"{prefix}/sum")(branches)
    if bias is not None and not bias_in_branch:
        bias_layer = ChannelBias(name=f"{prefix}/bias")
        y = bias_layer(y)
        bias_layer.set_weights([bias])
    if layer.activation is not None and layer.activation is not tf.keras.activations.linear:
        y = tf.keras.layers.Activation(layer.activation, name=f"{prefix}/activation")(y)
    if dense:
        y = tf.keras.layers.Reshape(tuple(int(d) for d in in_shape[1:-1]) + (units,),
                                    name=f"{prefix}/from_1x1")(y)
    return y


def strip_pabt(
    model: tf.keras.Model, name: str | None = None, *, fused: bool = False, input_shape=None
) -> tf.keras.Model:
    """A plain Keras/Larq functional model with no PaBT layers and the same function.

    Every PaBT layer becomes, for each of its active binary convolutions `(m, n)`, a
    branch `ThresholdShift(θ_n) → larq QuantConv2D(input_quantizer="ste_sign",
    kernel_quantizer="ste_sign", pad_values=1.0, use_bias=False, kernel=B_m) →
    ChannelScale(coef[m, n] · α_m)` (branches of one activation base share its shift,
    and LCE gives them one `LceQuantize`); several branches are summed by an `Add`, then
    the layer's bias and activation follow.

    With `fused=True`, the active weight bases of each activation base that are active
    on the same activation bases are one binary convolution instead: their ±1 kernels
    concatenated along the output axis (`k · C_out` filters) `→ ChannelScale(coef[m, n] ·
    α_m per group) → ChannelGroupSum`, one `LceBconv2d` with the scales fused (one per
    activation base unless that would store a kernel twice: see the module docstring);
    the bias is added after the first branch's scale, where LCE fuses it. Both are the
    same layers when no weight bases can be fused (the bias aside), e.g. for a BNN. On
    this host the fused export measured as fast as the unfused one (within ±2 %), with
    fewer operators and a flatbuffer no larger.

    Pruned binary convolutions are left out. Layer names stay traceable:
    `"<pabt layer>/m<m>n<n>_bconv"` for one binary convolution, `"<pabt
    layer>/m0_2n1_bconv"` for weight bases 0 and 2 fused on activation base 1
    (`parse_bconv_name`), `"<pabt layer>/n<n>_shift"`, ... With a single active
    activation base and a BatchNormalization before it that feeds only this layer, θ_n is
    folded into that BatchNormalization's beta (no shift op). `PaBTDense` becomes a 1×1
    binary convolution between two `Reshape`s. Dilated convolutions use
    `DilatedQuantConv2D` (a `QuantConv2D` emitting one dilated TF `Conv2D`).

    Other layers are copies (`from_config` + weights): the result shares no variables
    with `model`. Nested Functional/Sequential models are inlined.

    # Arguments
        model: a built Functional or Sequential `tf.keras.Model` (nested models allowed).
        name: name of the returned model (default `"<model>_stripped"`).
        fused: fuse the weight bases of each activation base (`True`), or one binary
            convolution per active binary convolution (`False`, the default).
        input_shape: the static input shape of the returned model, batch first (e.g.
            `(1, 360, 480, 3)`), for a model built on `Input((None, None, C))`: the size
            to deploy at (LCE converts a model of unknown size into one that only takes
            1×1 images). Its known dimensions must agree with the model's. Default: the
            model's own input shape. Single-input models only.

    # Returns
        A functional `tf.keras.Model`.

    # Raises
        TypeError: `model` is not a Keras model, or is (or contains) a subclassed model.
        ValueError: an unbuilt model, a layer that cannot be copied, or a PaBT layer
            that cannot be exported (non-sign quantizers, non-±1 kernels, called on
            several tensors).
    """
    if not isinstance(model, tf.keras.Model):  # before `model.name` below
        raise TypeError(f"`model` must be a tf.keras.Model, got {type(model).__name__}.")
    if not isinstance(fused, bool):
        raise TypeError(f"`fused` must be a bool, got {fused!r}.")

    def replace(layer: tf.keras.layers.Layer, x, context: NodeContext | None):
        if isinstance(layer, PaBTLayer):
            return _expand_pabt_layer(layer, x, context, fused=fused)
        return None

    name = name or f"{model.name}_stripped"
    if input_shape is None:
        stripped = rewrite_model(model, replace, name)
    else:
        shape = deploy_input_shape(model, input_shape, "input_shape")
        ref = model.inputs[0]
        inputs = tf.keras.Input(batch_shape=shape, dtype=ref.dtype, name=ref._keras_history.layer.name)
        stripped = tf.keras.Model(inputs, _GraphRewriter(replace).run(model, [inputs]), name=name)
    left = pabt_layers(stripped)  # the rewriter copies calls on several tensors
    if left:
        raise ValueError(f"{left[0].name} must be called on one tensor to be rewritten.")
    return stripped
