"""From a trained PaBT model to a verified Larq Compute Engine (LCE) flatbuffer.

DESIGN.md §1.4. Three steps, each usable on its own:

- `strip_pabt(model)`: a plain Keras/Larq functional model computing the same function,
  with every PaBT layer replaced by the sum of its *active* binary convolutions, each
  written the way LCE recognises a binary convolution:

      ThresholdShift (x − θ_n) → larq QuantConv2D(ste_sign, ste_sign, pad_values=1, B_m)
                               → ChannelScale (coef[m, n] · α_m)

  Pruned binary convolutions are removed from the graph (a zero-scaled kernel would make
  LCE fall back to a float convolution). `PaBTDense` becomes a 1×1 binary convolution on
  an input reshaped to `(P, 1, C)` *before* the shift, because a reshape between the sign
  and the convolution makes LCE emit a float convolution.
- `convert(model, **lce_options)`: strip, convert with
  `larq_compute_engine.convert_keras_model`, then read the flatbuffer's operators and
  check every binary convolution became an `LceBconv2d` (`convert_with_report` returns
  the full `ConversionReport`).
- `verify(model, flatbuffer, inputs)`: LCE's Python interpreter against Keras.
"""

from __future__ import annotations

import dataclasses
import platform
import re
import warnings
from collections import Counter
from typing import Any

import larq as lq
import numpy as np
import tensorflow as tf

from pabt_tf.layers import PaBTConv2D, PaBTDense, PaBTLayer, pabt_layers

__all__ = [
    "ThresholdShift",
    "ChannelScale",
    "ChannelBias",
    "DilatedQuantConv2D",
    "strip_pabt",
    "rewrite_model",
    "NodeContext",
    "convert",
    "convert_with_report",
    "verify",
    "operator_list",
    "operator_counts",
    "check_binary_convs",
    "OperatorInfo",
    "BinaryConvCheck",
    "VerificationResult",
    "ConversionReport",
    "ConversionError",
]

# "<pabt layer>/m<m>n<n>_bconv": the name `strip_pabt` gives each binary convolution.
_BCONV_NAME = re.compile(r"^(?P<owner>.+)/m(?P<m>\d+)n(?P<n>\d+)_bconv$")


# --------------------------------------------------------------------------------------
# Constant layers of the stripped model
# --------------------------------------------------------------------------------------


class _ConstantVectorLayer(tf.keras.layers.Layer):
    """A layer holding one non-trainable constant: a scalar or a vector over channels.

    The constant is a weight (so `get_weights`/`set_weights`, `.keras` files and
    SavedModels carry it); freezing turns it into a graph constant, which is what LCE
    needs to fuse it.
    """

    _weight_name = "value"
    _initializer = "zeros"

    def __init__(self, per_channel: bool = True, **kwargs):
        if not isinstance(per_channel, bool):
            raise ValueError(f"`per_channel` must be a bool, got {per_channel!r}.")
        self.per_channel = per_channel
        super().__init__(**kwargs)

    def build(self, input_shape):
        channels = tf.TensorShape(input_shape)[-1]
        if self.per_channel and channels is None:
            raise ValueError(f"{self.name}: the input's channel dimension must be known.")
        shape = (int(channels),) if self.per_channel else ()
        self.value = self.add_weight(
            self._weight_name, shape=shape, initializer=self._initializer, trainable=False
        )
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self) -> dict:
        return {**super().get_config(), "per_channel": self.per_channel}


@tf.keras.utils.register_keras_serializable(package="pabt_tf")
class ThresholdShift(_ConstantVectorLayer):
    """`x − θ`: the threshold of one activation base, before Larq's `ste_sign`.

    `sign(x − θ)` is PaBT's activation base `H_n(x)`. LCE fuses the constant subtraction
    into the preceding operator when it can (a float conv's bias, a binary conv's
    post-activation bias) or into its `LceQuantize` threshold.

    # Arguments
        per_channel: one threshold per input channel (shape `(C,)`) instead of a scalar.
    """

    _weight_name = "threshold"

    def call(self, inputs):
        return inputs - self.value


@tf.keras.utils.register_keras_serializable(package="pabt_tf")
class ChannelScale(_ConstantVectorLayer):
    """`x · s`, `s` per output channel: a binary convolution's weight `coef[m, n] · α_m`.

    Placed directly after a `QuantConv2D`, LCE fuses the multiply into the
    `LceBconv2d`'s post-activation multiplier.

    # Arguments
        per_channel: a vector over channels (default) instead of a scalar.
    """

    _weight_name = "scale"
    _initializer = "ones"

    def call(self, inputs):
        return inputs * self.value


@tf.keras.utils.register_keras_serializable(package="pabt_tf")
class ChannelBias(_ConstantVectorLayer):
    """`x + b` per output channel: a PaBT layer's bias, added once after its branches.

    # Arguments
        per_channel: a vector over channels (default) instead of a scalar.
    """

    _weight_name = "bias"

    def call(self, inputs):
        return inputs + self.value


@tf.keras.utils.register_keras_serializable(package="pabt_tf")
class DilatedQuantConv2D(lq.layers.QuantConv2D):
    """A Larq `QuantConv2D` whose dilated convolution is a single TF `Conv2D` op.

    Keras' `Conv2D` computes a dilated convolution through `tf.nn.convolution`, which
    emits `SpaceToBatchND → Conv2D → BatchToSpaceND`. LCE folds that back into a dilated
    `LceBconv2d` only when the `SpaceToBatchND` has one consumer; several binary
    convolutions of one activation base share it, and they would stay float
    `CONV_2D`s (seen with LCE 0.16). Calling `tf.nn.conv2d` with `dilations` directly
    gives LCE the op it matches. Same arguments and function as `QuantConv2D`.
    """

    def convolution_op(self, inputs, kernel):
        padding = self.padding.upper() if isinstance(self.padding, str) else self.padding
        return tf.nn.conv2d(
            inputs,
            kernel,
            strides=list(self.strides),
            padding=padding,
            dilations=list(self.dilation_rate),
        )


# --------------------------------------------------------------------------------------
# strip_pabt
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


def _foldable_batchnorm(context) -> tf.keras.layers.BatchNormalization | None:
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


def _expand_pabt_layer(layer: PaBTLayer, x: tf.Tensor, context=None) -> tf.Tensor:
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
        conv_args = dict(filters=layer.units, kernel_size=1, strides=1, padding="valid")
        bases = bases.reshape((bases.shape[0], 1, 1, channels, layer.units))
    elif isinstance(layer, PaBTConv2D):
        conv_args = dict(
            filters=layer.filters,
            kernel_size=layer.kernel_size,
            strides=layer.strides,
            padding=layer.padding,
            dilation_rate=layer.dilation_rate,
        )
    else:
        raise TypeError(f"{layer.name}: no export rule for {type(layer).__name__}.")

    shifted: dict[int, tf.Tensor] = {}
    active_bases = sorted({int(n) for n in np.nonzero(mask)[1]})
    bn = _foldable_batchnorm(context) if not dense and len(active_bases) == 1 else None
    if bn is not None:
        (n,) = active_bases
        beta = np.asarray(tf.keras.backend.get_value(bn.beta))
        bn.beta.assign((beta - np.broadcast_to(thresholds[n], beta.shape)).astype(beta.dtype))
        shifted[n] = x
    branches = []
    for m, n in zip(*np.nonzero(mask)):
        m, n = int(m), int(n)
        if n not in shifted:  # branches with the same activation base share the shift
            shift = ThresholdShift(per_channel=per_channel, name=f"{prefix}/n{n}_shift")
            shifted[n] = shift(x)
            shift.set_weights([thresholds[n]])
        conv_cls = (
            DilatedQuantConv2D
            if max(conv_args.get("dilation_rate", (1, 1))) > 1
            else lq.layers.QuantConv2D
        )
        conv = conv_cls(
            **conv_args,
            input_quantizer="ste_sign",
            kernel_quantizer="ste_sign",
            kernel_constraint="weight_clip",  # ±1 is inside the clip; silences Larq
            pad_values=1.0,
            use_bias=False,
            name=f"{prefix}/m{m}n{n}_bconv",
        )
        y = conv(shifted[n])
        conv.set_weights([bases[m]])
        scale = ChannelScale(name=f"{prefix}/m{m}n{n}_scale")
        y = scale(y)
        scale.set_weights([coef[m, n] * alpha[m]])
        branches.append(y)
    y = branches[0] if len(branches) == 1 else tf.keras.layers.Add(name=f"{prefix}/sum")(branches)
    if layer.use_bias:
        bias = ChannelBias(name=f"{prefix}/bias")
        y = bias(y)
        bias.set_weights([np.asarray(tf.keras.backend.get_value(layer.bias))])
    if layer.activation is not None and layer.activation is not tf.keras.activations.linear:
        y = tf.keras.layers.Activation(layer.activation, name=f"{prefix}/activation")(y)
    if dense:
        y = tf.keras.layers.Reshape(tuple(int(d) for d in in_shape[1:-1]) + (layer.units,),
                                    name=f"{prefix}/from_1x1")(y)
    return y


@dataclasses.dataclass
class NodeContext:
    """What `rewrite_model` tells `replace` about the layer call being rewritten.

    # Attributes
        ref_input: the input Keras tensor in the *original* model.
        input_is_exclusive: that tensor feeds only this call (and is no model output).
        producer_clone: the copy, in the new model, of the layer that produced it (None
            for a model input or a rewritten layer).
    """

    ref_input: Any
    input_is_exclusive: bool
    producer_clone: Any


class _GraphRewriter:
    """Rebuilds a Functional/Sequential model node by node, inlining nested models.

    `replace(layer, x, context)` returns the new output for a single-input layer it
    rewrites, or `None` to copy the layer (`from_config` + weights; shared layers stay shared).
    """

    def __init__(self, replace):
        self._replace = replace
        self._consumers: dict[str, int] = {}
        self._clones: dict[int, tf.keras.layers.Layer] = {}
        self._pending_weights: dict[int, list | None] = {}

    def clone_layer(self, layer):
        key = id(layer)
        if key not in self._clones:
            try:
                clone = type(layer).from_config(layer.get_config())
            except Exception as err:
                if layer.weights:
                    raise ValueError(
                        f"cannot copy layer {layer.name!r} ({type(layer).__name__}): "
                        f"from_config(get_config()) failed: {err}"
                    ) from err
                clone = layer  # weightless and not re-creatable: reuse it as it is
            self._clones[key] = clone
            self._pending_weights[key] = layer.get_weights() if clone is not layer else None
        return self._clones[key]

    def call_layer(self, layer, args, kwargs):
        clone = self.clone_layer(layer)
        outputs = clone(*args, **kwargs)
        weights = self._pending_weights.get(id(layer))
        if weights:
            clone.set_weights(weights)
            self._pending_weights[id(layer)] = None
        return outputs

    def run(self, model: tf.keras.Model, inputs: list) -> Any:
        """Apply `model`'s graph, rewritten, to the list of (new) Keras tensors `inputs`."""
        if isinstance(model, tf.keras.Sequential) and not model._is_graph_network:
            if not model.built:
                raise ValueError(
                    f"Sequential model {model.name!r} is not built; call it on data or "
                    "give it an `Input` first."
                )
            (x,) = inputs
            for layer in model.layers:
                x = self.apply(layer, (x,), {})
            return x
        if not getattr(model, "_is_graph_network", False):
            raise TypeError(
                f"model {model.name!r} ({type(model).__name__}) is a subclassed model; only "
                "Functional and Sequential models (nested ones included) can be rebuilt. "
                "Rebuild it with the functional API."
            )
        if len(inputs) != len(model.inputs):
            raise ValueError(
                f"model {model.name!r} takes {len(model.inputs)} inputs, got {len(inputs)}."
            )
        tensors: dict[str, Any] = {}
        for ref, new in zip(model.inputs, inputs):
            tensors[str(id(ref))] = new
        for nodes in model._nodes_by_depth.values():
            for node in nodes:
                for t_id in node.flat_input_ids:
                    self._consumers[t_id] = self._consumers.get(t_id, 0) + 1
        for out in model.outputs:
            self._consumers[str(id(out))] = self._consumers.get(str(id(out)), 0) + 1
        for depth in sorted(model._nodes_by_depth, reverse=True):
            for node in model._nodes_by_depth[depth]:
                if node.is_input:
                    continue
                if any(t_id not in tensors for t_id in node.flat_input_ids):
                    continue  # not needed for the outputs
                flat = list(node._flat_arguments)
                for kt_id, index in node._keras_inputs_ids_and_indices:
                    flat[index] = tensors[kt_id]
                args, kwargs = tf.nest.pack_sequence_as(
                    (node.call_args, list(node.call_kwargs.values())), flat
                )
                kwargs = dict(zip(node.call_kwargs.keys(), kwargs))
                refs = node.keras_inputs
                outputs = self.apply(node.layer, args, kwargs, refs[0] if len(refs) == 1 else None)
                for t_id, y in zip(node.flat_output_ids, tf.nest.flatten(outputs)):
                    tensors[t_id] = y
        flat_outputs = [tensors[str(id(x))] for x in model.outputs]
        return tf.nest.pack_sequence_as(model._nested_outputs, flat_outputs)

    def _context(self, ref):
        if ref is None:
            return None
        producer = ref._keras_history.layer
        return NodeContext(
            ref_input=ref,
            input_is_exclusive=self._consumers.get(str(id(ref)), 0) == 1,
            producer_clone=self._clones.get(id(producer)),
        )

    def apply(self, layer, args, kwargs, ref=None):
        if isinstance(layer, tf.keras.Model):
            kwargs = {k: v for k, v in kwargs.items() if k not in ("training", "mask")}
            if kwargs:
                raise ValueError(
                    f"nested model {layer.name!r} is called with arguments {sorted(kwargs)}; "
                    "only its inputs can be inlined."
                )
            return self.run(layer, tf.nest.flatten(args))
        if isinstance(layer, tf.keras.layers.InputLayer):
            return args[0]
        if len(args) == 1 and tf.is_tensor(args[0]):
            replaced = self._replace(layer, args[0], self._context(ref))
            if replaced is not None:
                return replaced
        elif isinstance(layer, PaBTLayer):
            raise ValueError(f"{layer.name} must be called on one tensor to be rewritten.")
        return self.call_layer(layer, args, kwargs)


def rewrite_model(model: tf.keras.Model, replace, name: str) -> tf.keras.Model:
    """Rebuild `model` as a functional model, rewriting layers with `replace`.

    `replace(layer, x, context)` gets each single-input layer, its new input tensor and a
    `NodeContext`, and returns the new output tensor, or `None` to copy the layer
    unchanged. Nested models are
    inlined. Used by `strip_pabt` and by the benchmark's float/Larq twins.

    # Raises
        TypeError: a subclassed model (or not a Keras model).
        ValueError: an unbuilt model or a layer that cannot be copied.
    """
    if not isinstance(model, tf.keras.Model):
        raise TypeError(f"`model` must be a tf.keras.Model, got {type(model).__name__}.")
    if isinstance(model, tf.keras.Sequential) and not model._is_graph_network:
        if not model.built or getattr(model, "_build_input_shape", None) is None:
            raise ValueError(
                f"Sequential model {model.name!r} has no known input shape; give it an "
                "`Input` or call `model.build(input_shape)` first."
            )
        shape = tf.TensorShape(model._build_input_shape)
        inputs = [tf.keras.Input(batch_shape=shape, name=f"{model.name}_input")]
    elif getattr(model, "_is_graph_network", False):
        inputs = [
            tf.keras.Input(batch_shape=ref.shape, dtype=ref.dtype, name=ref._keras_history.layer.name)
            for ref in model.inputs
        ]
    else:
        raise TypeError(
            f"model {model.name!r} ({type(model).__name__}) is a subclassed model; only "
            "Functional and Sequential models can be rebuilt. Rebuild it with the "
            "functional API."
        )
    outputs = _GraphRewriter(replace).run(model, inputs)
    return tf.keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs, name=name)


def strip_pabt(model: tf.keras.Model, name: str | None = None) -> tf.keras.Model:
    """A plain Keras/Larq functional model with no PaBT layers and the same function.

    Every PaBT layer becomes, for each of its *active* binary convolutions `(m, n)`, a
    branch `ThresholdShift(θ_n) → larq QuantConv2D(input_quantizer="ste_sign",
    kernel_quantizer="ste_sign", pad_values=1.0, use_bias=False, kernel=B_m) →
    ChannelScale(coef[m, n] · α_m)`; several branches are summed by an `Add`, then the
    layer's bias and activation follow. Branches of one activation base share its shift.
    Pruned binary convolutions are left out. Layer names stay traceable:
    `"<pabt layer>/m<m>n<n>_bconv"`, `"<pabt layer>/n<n>_shift"`, ... With a single
    active activation base and a BatchNormalization before it that feeds only this
    layer, θ_n is folded into that BatchNormalization's beta (no shift op). `PaBTDense`
    becomes a 1×1 binary convolution between two `Reshape`s. Dilated convolutions use
    `DilatedQuantConv2D` (a `QuantConv2D` emitting one dilated TF `Conv2D`).

    Other layers are copies (`from_config` + weights): the result shares no variables
    with `model`. Nested Functional/Sequential models are inlined.

    # Arguments
        model: a built Functional or Sequential `tf.keras.Model` (nested models allowed).
        name: name of the returned model (default `"<model>_stripped"`).

    # Returns
        A functional `tf.keras.Model`.

    # Raises
        TypeError: `model` is not a Keras model, or is (or contains) a subclassed model.
        ValueError: an unbuilt model, a layer that cannot be copied, or a PaBT layer
            that cannot be exported (non-sign quantizers, non-±1 kernels).
    """

    if not isinstance(model, tf.keras.Model):
        raise TypeError(f"`model` must be a tf.keras.Model, got {type(model).__name__}.")

    def replace(layer, x, context):
        if isinstance(layer, PaBTLayer):
            return _expand_pabt_layer(layer, x, context)
        return None

    return rewrite_model(model, replace, name or f"{model.name}_stripped")


# --------------------------------------------------------------------------------------
# Reading a flatbuffer
# --------------------------------------------------------------------------------------


def _schema():
    try:
        from tensorflow.lite.python import schema_py_generated as schema
    except ImportError:  # pragma: no cover - older/newer TF layouts
        from larq_compute_engine.mlir.python import tflite_schema as schema
    return schema


@dataclasses.dataclass(frozen=True)
class OperatorInfo:
    """One operator of a TFLite flatbuffer.

    # Attributes
        index: position in the (first) subgraph's execution order.
        name: builtin name (`"CONV_2D"`) or custom code (`"LceBconv2d"`).
        input_shapes, output_shapes: tensor shapes (`None` for an omitted input).
        input_types, output_types: TFLite tensor type names (`"FLOAT32"`, `"INT32"`...).
        output_names: the output tensors' names (TFLite may truncate and join fused names).
        options: decoded custom options of LCE operators (flexbuffer map), else `{}`.
    """

    index: int
    name: str
    input_shapes: tuple
    output_shapes: tuple
    input_types: tuple
    output_types: tuple
    output_names: tuple
    options: dict

    @property
    def is_binary_conv(self) -> bool:
        return self.name == "LceBconv2d"

    @property
    def conv_signature(self) -> tuple | None:
        """`(out_channels, kh, kw, in_channels, strides, dilations)` of a convolution-like
        op (binary or float), used to match ops to Keras layers; `None` for other ops."""
        if self.name == "LceBconv2d":
            o, kh, kw = self.input_shapes[1][:3]
            opts = self.options
            return (
                int(o), int(kh), int(kw), int(opts.get("channels_in", -1)),
                (int(opts.get("stride_height", 1)), int(opts.get("stride_width", 1))),
                (int(opts.get("dilation_height_factor", 1)), int(opts.get("dilation_width_factor", 1))),
            )  # fmt: skip
        if self.name == "CONV_2D":
            o, kh, kw, c = self.input_shapes[1]
            return (int(o), int(kh), int(kw), int(c), self.options.get("strides"), self.options.get("dilations"))
        if self.name == "FULLY_CONNECTED":
            o, c = self.input_shapes[1][-2:]
            return (int(o), 1, 1, int(c), (1, 1), (1, 1))
        return None


def _tensor_type_names(schema) -> dict:
    return {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}


def _load_model(flatbuffer: bytes):
    if not isinstance(flatbuffer, (bytes, bytearray)):
        raise TypeError(f"`flatbuffer` must be bytes, got {type(flatbuffer).__name__}.")
    if len(flatbuffer) < 8 or bytes(flatbuffer[4:8]) != b"TFL3":
        raise ValueError("`flatbuffer` is not a TFLite flatbuffer (no 'TFL3' identifier).")
    schema = _schema()
    return schema, schema.Model.GetRootAs(bytes(flatbuffer), 0)


def operator_list(flatbuffer: bytes) -> list[OperatorInfo]:
    """The operators of a TFLite/LCE flatbuffer's main subgraph, in execution order.

    Parses the flatbuffer with the TFLite schema bundled in TensorFlow and LCE's custom
    options with `flatbuffers.flexbuffers`.

    # Raises
        TypeError / ValueError: if `flatbuffer` is not a TFLite flatbuffer.
    """
    from flatbuffers import flexbuffers

    schema, model = _load_model(flatbuffer)
    builtin_names = {
        v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")
    }
    type_names = _tensor_type_names(schema)
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        if code.CustomCode():
            codes.append(code.CustomCode().decode())
        else:  # deprecated_builtin_code is the real one for codes < 127
            codes.append(builtin_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?"))
    graph = model.Subgraphs(0)

    def tensor(index):
        if index < 0:
            return None, None, None
        t = graph.Tensors(index)
        shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        return shape, type_names.get(t.Type(), str(t.Type())), (t.Name() or b"").decode()

    ops = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        name = codes[op.OpcodeIndex()]
        ins = [tensor(op.Inputs(j)) for j in range(op.InputsLength())]
        outs = [tensor(op.Outputs(j)) for j in range(op.OutputsLength())]
        options: dict = {}
        raw = op.CustomOptionsAsNumpy()
        if not isinstance(raw, int) and len(raw):
            try:
                options = dict(flexbuffers.Loads(bytes(raw)))
            except Exception:  # not a flexbuffer map: keep the op, skip its options
                options = {}
        elif name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            table = op.BuiltinOptions()
            if table is not None:
                cls = schema.Conv2DOptions if name == "CONV_2D" else schema.DepthwiseConv2DOptions
                o = cls()
                o.Init(table.Bytes, table.Pos)
                options = {
                    "strides": (int(o.StrideH()), int(o.StrideW())),
                    "dilations": (int(o.DilationHFactor()), int(o.DilationWFactor())),
                    "padding": "SAME" if o.Padding() == schema.Padding.SAME else "VALID",
                }
        ops.append(
            OperatorInfo(
                index=i,
                name=name,
                input_shapes=tuple(s for s, _, _ in ins),
                output_shapes=tuple(s for s, _, _ in outs),
                input_types=tuple(t for _, t, _ in ins),
                output_types=tuple(t for _, t, _ in outs),
                output_names=tuple(n for _, _, n in outs),
                options=options,
            )
        )
    return ops


def operator_counts(flatbuffer: bytes) -> dict[str, int]:
    """`{operator name: count}` of a flatbuffer, in order of first appearance."""
    return dict(Counter(op.name for op in operator_list(flatbuffer)))


# --------------------------------------------------------------------------------------
# Checking binary convolutions
# --------------------------------------------------------------------------------------


def _is_binary_quant_conv(layer) -> bool:
    if not isinstance(layer, lq.layers.QuantConv2D):
        return False
    return (
        getattr(layer.input_quantizer, "precision", None) == 1
        and getattr(layer.kernel_quantizer, "precision", None) == 1
    )


def _binary_quant_dense(layer) -> bool:
    return isinstance(layer, lq.layers.QuantDense) and (
        getattr(layer.input_quantizer, "precision", None) == 1
        and getattr(layer.kernel_quantizer, "precision", None) == 1
    )


def _all_layers(model) -> list:
    out, seen = [], set()

    def visit(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        out.append(layer)
        for sub in getattr(layer, "layers", []) or []:
            visit(sub)

    for layer in model.layers:
        visit(layer)
    return out


@dataclasses.dataclass
class BinaryConvCheck:
    """Binary convolutions of one owner (a PaBT layer, or a Larq `QuantConv2D`).

    # Attributes
        layer: the PaBT layer's name (or the Larq layer's).
        expected: its binary convolutions in the stripped model.
        found: `LceBconv2d` ops matched to it in the flatbuffer.
        float_ops: float ops of the same shape that took the missing binary ones' place.
        signature: `(out_channels, kh, kw, in_channels, strides, dilations)`.
    """

    layer: str
    expected: int
    found: int = 0
    float_ops: list = dataclasses.field(default_factory=list)
    signature: tuple = ()

    @property
    def ok(self) -> bool:
        return self.found == self.expected


_FLOAT_REASON = (
    "LCE keeps a binary convolution float when something sits between the sign and the "
    "convolution (a reshape/transpose), when its kernel is not ±scale per output channel "
    "(e.g. a zero scale), when 'same' padding does not pad with +1 (Larq pad_values=1.0), "
    "or when the input quantizer is not a sign"
)


def check_binary_convs(
    stripped: tf.keras.Model, flatbuffer: bytes
) -> tuple[list[BinaryConvCheck], list[str], list[str]]:
    """Match the binary `QuantConv2D` layers of a (stripped) model to the flatbuffer.

    Every binary convolution is identified by its signature
    `(out_channels, kh, kw, in_channels, strides, dilations)`; within a signature the
    `LceBconv2d` ops are shared out over the layers in model order, so a shortfall is
    attributed to the last layers of that shape. Float `CONV_2D`/`FULLY_CONNECTED` ops of
    a short signature are reported as the binary convolutions' float replacements.

    # Returns
        `(checks, problems, notes)`: one `BinaryConvCheck` per owner, problem messages
        (empty when every binary convolution became an `LceBconv2d`), informative notes.
    """
    ops = operator_list(flatbuffer)
    checks: dict[str, BinaryConvCheck] = {}
    per_signature: dict[tuple, list[str]] = {}
    notes: list[str] = []
    for layer in _all_layers(stripped):
        if _binary_quant_dense(layer):
            notes.append(
                f"Larq QuantDense {layer.name!r} runs as a float FULLY_CONNECTED (LCE has "
                "no binary dense op; PaBTDense exports as a 1x1 binary convolution instead)."
            )
        if not _is_binary_quant_conv(layer):
            continue
        match = _BCONV_NAME.match(layer.name)
        owner = match.group("owner") if match else layer.name
        kh, kw, c, o = (int(d) for d in layer.kernel.shape)
        sig = (o, kh, kw, c, tuple(int(s) for s in layer.strides), tuple(int(d) for d in layer.dilation_rate))
        check = checks.setdefault(owner, BinaryConvCheck(owner, 0, signature=sig))
        check.expected += 1
        per_signature.setdefault(sig, []).append(owner)

    bconv_by_sig = Counter(op.conv_signature for op in ops if op.is_binary_conv)
    # Float stand-ins are matched on (out, kh, kw, in) only: a dilated conv that LCE
    # leaves float shows up with dilation 1 between SpaceToBatchND/BatchToSpaceND.
    float_by_shape: dict[tuple, list[OperatorInfo]] = {}
    for op in ops:
        if op.name in ("CONV_2D", "FULLY_CONNECTED"):
            float_by_shape.setdefault(op.conv_signature[:4], []).append(op)

    problems: list[str] = []
    for sig, owners in per_signature.items():
        available = bconv_by_sig.pop(sig, 0)
        for owner in owners:  # one entry per binary conv, in model order
            if available > 0:
                checks[owner].found += 1
                available -= 1
        if available:
            problems.append(f"{available} extra LceBconv2d op(s) of shape {sig} match no binary layer.")
        floats = float_by_shape.get(sig[:4], [])
        for owner in dict.fromkeys(owners):
            if not checks[owner].ok:
                checks[owner].float_ops = [f"{op.name}#{op.index}" for op in floats]
    for sig, count in bconv_by_sig.items():
        problems.append(f"{count} LceBconv2d op(s) of shape {sig} match no binary layer of the model.")
    for check in checks.values():
        if check.ok:
            continue
        missing = check.expected - check.found
        where = (
            f"; float op(s) of the same shape: {', '.join(check.float_ops)}"
            if check.float_ops
            else ""
        )
        problems.append(
            f"layer {check.layer!r}: {missing} of its {check.expected} binary convolution(s) "
            f"did not become an LceBconv2d{where}. {_FLOAT_REASON}."
        )
    return list(checks.values()), problems, notes


# --------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------


def _default_indirect_bgemm() -> bool:
    # LCE's default x86 bconv kernels are slow; indirect BGEMM gives the same outputs.
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


@dataclasses.dataclass
class VerificationResult:
    """LCE interpreter vs Keras on the same inputs.

    # Attributes
        samples: number of inputs compared.
        max_abs_diff, mean_abs_diff: over all outputs.
        top1_agreement: fraction of samples whose argmax (last axis of the first output)
            agrees.
        atol, min_top1: the thresholds `ok` uses.
        interpreter: the interpreter options used.
    """

    samples: int
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    atol: float = 1e-3
    min_top1: float = 0.99
    interpreter: dict = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.atol and self.top1_agreement >= self.min_top1

    def __str__(self) -> str:
        status = "PASSED" if self.ok else "FAILED"
        return (
            f"verification {status} on {self.samples} samples: max |diff| "
            f"{self.max_abs_diff:.3g} (≤ {self.atol:g}), mean |diff| {self.mean_abs_diff:.3g}, "
            f"top-1 agreement {100 * self.top1_agreement:.2f} % (≥ {100 * self.min_top1:g} %)"
        )


def verify(
    model: tf.keras.Model,
    flatbuffer: bytes,
    inputs: np.ndarray,
    *,
    atol: float = 1e-3,
    min_top1: float = 0.99,
    num_threads: int = 1,
    use_indirect_bgemm: bool | None = None,
    batch_size: int = 64,
) -> VerificationResult:
    """Run `flatbuffer` with LCE's Python interpreter and `model` with Keras; compare.

    # Arguments
        model: the Keras model (PaBT or stripped; both compute the same function).
        flatbuffer: the converted model.
        inputs: a numpy array of samples with a leading batch axis (one input only).
        atol, min_top1: thresholds of the result's `ok`.
        num_threads: interpreter threads.
        use_indirect_bgemm: LCE's indirect-BGEMM bconv kernels (same outputs); default
            on x86, where LCE's default kernels are slow.
        batch_size: Keras batch size.

    # Returns
        A `VerificationResult`.

    # Raises
        ValueError: on empty inputs or inputs whose shape does not match the flatbuffer.
    """
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    inputs = np.asarray(inputs, np.float32)
    if inputs.ndim < 1 or len(inputs) == 0:
        raise ValueError("`inputs` must hold at least one sample (leading batch axis).")
    if use_indirect_bgemm is None:
        use_indirect_bgemm = _default_indirect_bgemm()
    interpreter = Interpreter(
        bytes(flatbuffer), num_threads=num_threads, use_indirect_bgemm=use_indirect_bgemm
    )
    expected_shape = tuple(interpreter.input_shapes[0][1:])
    if tuple(inputs.shape[1:]) != expected_shape:
        raise ValueError(
            f"`inputs` have sample shape {tuple(inputs.shape[1:])}, the flatbuffer expects "
            f"{expected_shape}."
        )
    lce_out = interpreter.predict(inputs)
    keras_out = model.predict(inputs, batch_size=batch_size, verbose=0)
    lce_list = lce_out if isinstance(lce_out, list) else [lce_out]
    keras_list = keras_out if isinstance(keras_out, list) else [keras_out]
    diffs = [np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).ravel()
             for a, b in zip(lce_list, keras_list)]
    diff = np.concatenate(diffs)
    first_lce = np.asarray(lce_list[0]).reshape(len(inputs), -1)
    first_keras = np.asarray(keras_list[0]).reshape(len(inputs), -1)
    agreement = float(np.mean(first_lce.argmax(-1) == first_keras.argmax(-1)))
    return VerificationResult(
        samples=int(len(inputs)),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        top1_agreement=agreement,
        atol=float(atol),
        min_top1=float(min_top1),
        interpreter=dict(num_threads=num_threads, use_indirect_bgemm=bool(use_indirect_bgemm)),
    )


# --------------------------------------------------------------------------------------
# convert
# --------------------------------------------------------------------------------------


class ConversionError(ValueError):
    """A conversion whose flatbuffer fails the checks; `.report` has the details."""

    def __init__(self, message: str, report: "ConversionReport"):
        super().__init__(message)
        self.report = report


def _weight_bytes(model: tf.keras.Model) -> int:
    return int(sum(np.asarray(w).nbytes for w in model.get_weights()))


@dataclasses.dataclass
class ConversionReport:
    """What `convert_with_report` produced and checked.

    # Attributes
        flatbuffer: the converted model (bytes).
        operators: `OperatorInfo` list, execution order.
        op_counts: `{operator: count}`.
        flatbuffer_bytes: size of the flatbuffer.
        keras_weight_bytes: bytes of the input model's weights (`get_weights`).
        stripped_weight_bytes: bytes of the stripped model's weights.
        binary_convs: one `BinaryConvCheck` per PaBT (or Larq binary) layer.
        expected_bconvs, found_bconvs: totals.
        problems: why the flatbuffer fails the binary-op check (empty if it passes).
        notes: informative remarks (e.g. Larq QuantDense layers that stay float).
        verification: a `VerificationResult`, if inputs were given.
        mean_binary_convs: MAC-weighted mean active binary convs per PaBT layer (None
            without PaBT layers).
    """

    flatbuffer: bytes = dataclasses.field(repr=False)
    operators: list
    op_counts: dict
    flatbuffer_bytes: int
    keras_weight_bytes: int
    stripped_weight_bytes: int
    binary_convs: list
    expected_bconvs: int
    found_bconvs: int
    problems: list
    notes: list
    verification: VerificationResult | None = None
    mean_binary_convs: float | None = None

    @property
    def binary_ok(self) -> bool:
        return not self.problems

    @property
    def ok(self) -> bool:
        return self.binary_ok and (self.verification is None or self.verification.ok)

    def format(self) -> str:
        """A human-readable report: operator table, binary-conv check, sizes, verification."""
        lines = ["Operators:"]
        width = max([len(k) for k in self.op_counts] + [8])
        for name, count in self.op_counts.items():
            lines.append(f"  {name:<{width}}  {count:>4}")
        lines.append("Binary convolutions (expected -> LceBconv2d found):")
        for check in self.binary_convs:
            mark = "ok" if check.ok else "MISSING"
            extra = f"  float: {', '.join(check.float_ops)}" if check.float_ops else ""
            lines.append(f"  {check.layer:<30} {check.expected:>3} -> {check.found:<3} {mark}{extra}")
        lines.append(f"  total {self.expected_bconvs} -> {self.found_bconvs}")
        if self.mean_binary_convs is not None:
            lines.append(f"Mean active binary convolutions per PaBT layer: {self.mean_binary_convs:.3f}")
        lines.append(
            f"Sizes: Keras weights {self.keras_weight_bytes / 1024:.1f} KiB (stripped model "
            f"{self.stripped_weight_bytes / 1024:.1f} KiB float32), flatbuffer "
            f"{self.flatbuffer_bytes / 1024:.1f} KiB"
        )
        for note in self.notes:
            lines.append(f"Note: {note}")
        for problem in self.problems:
            lines.append(f"PROBLEM: {problem}")
        if self.verification is not None:
            lines.append(str(self.verification))
        return "\n".join(lines)

    __str__ = format


def convert_with_report(
    model: tf.keras.Model,
    inputs: np.ndarray | None = None,
    *,
    strict: bool = True,
    atol: float = 1e-3,
    min_top1: float = 0.99,
    **lce_options,
) -> ConversionReport:
    """`strip_pabt` + `larq_compute_engine.convert_keras_model` + checks.

    # Arguments
        model: a Keras model with PaBT layers (or a plain Larq model).
        inputs: optional samples; if given, `verify` runs and its result is in the report.
        strict: raise `ConversionError` when a binary convolution did not become an
            `LceBconv2d` or verification fails; `False` only warns.
        atol, min_top1: verification thresholds.
        **lce_options: passed to `convert_keras_model` (`target="arm"|"xcore"`,
            `inference_input_type`, ...).

    # Returns
        A `ConversionReport` (`report.flatbuffer` holds the bytes).

    # Raises
        ConversionError: with `strict=True`, on a failed check (the message names the
            layers and the reasons; `.report` holds the report).
        TypeError / ValueError: from `strip_pabt`, or a non-float32 model.
    """
    import larq_compute_engine as lce

    if not isinstance(model, tf.keras.Model):
        raise TypeError(f"`model` must be a tf.keras.Model, got {type(model).__name__}.")
    policy = getattr(model, "dtype_policy", None)
    if policy is not None and policy.name != "float32":
        raise ValueError(
            f"`model` must be float32 for LCE conversion, its dtype policy is {policy.name!r}."
        )
    if not tf.executing_eagerly():
        raise RuntimeError("convert needs eager execution (LCE's converter does).")
    stripped = strip_pabt(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flatbuffer = lce.convert_keras_model(stripped, **lce_options)
    checks, problems, notes = check_binary_convs(stripped, flatbuffer)
    layers = pabt_layers(model)
    mean_convs = None
    if layers:
        from pabt_tf.summary import mean_binary_convs

        mean_convs = mean_binary_convs(model)
    ops = operator_list(flatbuffer)
    report = ConversionReport(
        flatbuffer=flatbuffer,
        operators=ops,
        op_counts=dict(Counter(op.name for op in ops)),
        flatbuffer_bytes=len(flatbuffer),
        keras_weight_bytes=_weight_bytes(model),
        stripped_weight_bytes=_weight_bytes(stripped),
        binary_convs=checks,
        expected_bconvs=sum(c.expected for c in checks),
        found_bconvs=sum(1 for op in ops if op.is_binary_conv),
        problems=problems,
        notes=notes,
        mean_binary_convs=mean_convs,
    )
    if inputs is not None:
        report.verification = verify(model, flatbuffer, inputs, atol=atol, min_top1=min_top1)
    if not report.ok:
        reasons = list(report.problems)
        if report.verification is not None and not report.verification.ok:
            reasons.append(str(report.verification))
        message = "LCE conversion check failed:\n  " + "\n  ".join(reasons)
        if strict:
            raise ConversionError(message, report)
        warnings.warn(message + "\n" + report.format(), stacklevel=2)
    return report


def convert(model: tf.keras.Model, *, strict: bool = True, **lce_options) -> bytes:
    """`strip_pabt` then LCE's `convert_keras_model`, checked: every binary convolution
    must come out as an `LceBconv2d` (one per active binary convolution).

    # Arguments
        model: a Keras model with PaBT layers (Functional or Sequential).
        strict: raise on a binary convolution that came out float (default); `False`
            warns with the report instead.
        **lce_options: passed to `larq_compute_engine.convert_keras_model`.

    # Returns
        The flatbuffer (bytes). `convert_with_report` also returns the operator table,
        sizes and, given inputs, the verification.

    # Raises
        ConversionError: a binary convolution did not become an `LceBconv2d` (strict).
    """
    return convert_with_report(model, strict=strict, **lce_options).flatbuffer
