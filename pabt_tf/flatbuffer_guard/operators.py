"""Each operator's own checks: what TF Lite's windowed kernels and LCE's kernels read
without checking (options they divide by, inputs they dereference, shapes they trust)."""

from __future__ import annotations

import math
import struct
from typing import TYPE_CHECKING

from pabt_tf.flatbuffer_guard.structure import enum_names, tensor_shape

if TYPE_CHECKING:  # references.py imports this module
    from pabt_tf.flatbuffer_guard.references import Checker

# LCE's converter writes TF Lite's `Padding` and `ActivationFunctionType` enum values
# (NONE, RELU, RELU_N1_TO_1, RELU6); older converters wrote names.
_LCE_PADDING = (0, 1, "SAME", "same", "VALID", "valid")
_LCE_ACTIVATIONS = (0, 1, 2, 3, "", "NONE", "RELU", "RELU_N1_TO_1", "RELU6")
_BITPACK = 32  # LCE packs binary activations and packed filters into int32 words

# Windowed operators whose kernels divide by strides and sizes read from their options
# (TF Lite zero-fills absent options), with the option table they need and how many inputs
# LCE's TF Lite copy reads (a depthwise convolution without its bias slot crashes it).
_WINDOWED = {
    "CONV_2D": ("Conv2DOptionsT", (2, 3)),
    "DEPTHWISE_CONV_2D": ("DepthwiseConv2DOptionsT", (3,)),
    "AVERAGE_POOL_2D": ("Pool2DOptionsT", (1,)),
    "MAX_POOL_2D": ("Pool2DOptionsT", (1,)),
    "L2_POOL_2D": ("Pool2DOptionsT", (1,)),
    "TRANSPOSE_CONV": ("TransposeConvOptionsT", (3, 4)),
    "CONV_3D": ("Conv3DOptionsT", (2, 3)),
}
# Strides, dilations and window sizes beyond this overflow TF Lite's int arithmetic.
_MAX_WINDOW = 2**16


def _expect_window_output(checker, where, x, window, same: bool, channels: int, out_shape):
    """Windowed kernels resize their output from their input when the interpreter starts;
    the checks of the operators after them read the *stored* shapes, so stored and computed
    must agree (TF Lite's padding rules; `window` = (size, stride, dilation) for H and W)."""
    spatial = []
    for size, (kernel, stride, dilation) in zip(x[1:3], window):
        extent = (kernel - 1) * dilation + 1
        spatial.append(-(-size // stride) if same else max(0, -(-(size - extent + 1) // stride)))
    expected = [x[0], *spatial, channels]
    if out_shape != expected:
        checker.fail(where, f"output shape {out_shape}, but input {x} gives {expected}")


def check_builtin_operator(checker: "Checker", where: str, name: str, op, tensors: list) -> None:
    options = op.builtinOptions
    if name in _WINDOWED:
        table, arities = _WINDOWED[name]
        if type(options).__name__ != table:
            checker.fail(where, f"options {type(options).__name__}, expected {table[:-1]}")
        inputs = [int(i) for i in op.inputs] if op.inputs is not None else []
        if len(inputs) not in arities:
            checker.fail(where, f"{len(inputs)} inputs, expected {' or '.join(map(str, arities))}")
        windowed = [tensor_shape(tensors[i]) for i in inputs[:2] if i >= 0]
        if any(0 in shape for shape in windowed):
            checker.fail(where, f"an empty input or filter among {windowed}")
        _check_2d_window_shapes(checker, where, name, options, op, tensors)
    if name == "RESHAPE":
        _check_reshape(checker, where, op, tensors)
    enums = {"padding": checker.schema.Padding,
             "fusedActivationFunction": checker.schema.ActivationFunctionType,
             "weightsFormat": checker.schema.FullyConnectedOptionsWeightsFormat}  # fmt: skip
    for key, value in (vars(options) if options is not None else {}).items():
        if key.startswith(("stride", "dilation", "filter")) and isinstance(value, int):
            if not 1 <= value <= _MAX_WINDOW:
                checker.fail(where, f"option {key} = {value}, expected 1..{_MAX_WINDOW}")
        # An unknown enum value becomes "unknown padding" etc.: empty outputs, then crashes.
        if key in enums and value not in enum_names(enums[key]):
            checker.fail(where, f"option {key} = {value}, not a {enums[key].__name__} value")


def _check_reshape(checker, where: str, op, tensors: list) -> None:
    """A reshape's output shape comes from its constant shape input at run time, not from
    the stored one the later checks read: the two must agree."""
    import numpy as np

    inputs = [int(i) for i in op.inputs] if op.inputs is not None else []
    if len(inputs) < 2 or inputs[1] < 0 or op.outputs is None or len(op.outputs) != 1:
        return
    target = tensors[inputs[1]]
    data = checker.buffers[target.buffer].data
    if data is None or not len(data) or checker.type_names[target.type] != "INT32":
        return  # computed at run time: TF Lite checks the element count itself
    shape = [int(d) for d in np.frombuffer(bytes(bytearray(data)), "<i4")]
    size = math.prod(tensor_shape(tensors[inputs[0]])) if inputs[0] >= 0 else 0
    if shape.count(-1) == 1 and math.prod(shape) != 0:
        shape[shape.index(-1)] = size // -math.prod(shape)
    stored = tensor_shape(tensors[int(op.outputs[0])])
    if shape != stored or math.prod(shape) != size:
        checker.fail(where, f"output shape {stored}, but the shape input gives {shape} "
                            f"for {size} elements")  # fmt: skip


def _check_2d_window_shapes(checker, where: str, name: str, options, op, tensors: list) -> None:
    if name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D"):
        return
    x = tensor_shape(tensors[op.inputs[0]]) if op.inputs[0] >= 0 else []
    outputs = [int(i) for i in op.outputs] if op.outputs is not None else []
    if len(x) != 4 or len(outputs) != 1:
        checker.fail(where, f"input shape {x} and {len(outputs)} outputs; expected 4-D and 1")
    if name.endswith("POOL_2D"):
        kernel, channels = (options.filterHeight, options.filterWidth), x[3]
    else:
        w = tensor_shape(tensors[op.inputs[1]]) if op.inputs[1] >= 0 else []
        if len(w) != 4:
            checker.fail(where, f"filter shape {w}, expected 4-D")
        kernel, channels = (w[1], w[2]), (w[0] if name == "CONV_2D" else w[3])
        if name == "CONV_2D":
            _check_groups(checker, where, x, w)
    dilations = (getattr(options, "dilationHFactor", 1), getattr(options, "dilationWFactor", 1))
    window = list(zip(kernel, (options.strideH, options.strideW), dilations))
    same = options.padding == checker.schema.Padding.SAME
    _expect_window_output(checker, where, x, window, same, channels, tensor_shape(tensors[outputs[0]]))


def _check_groups(checker, where: str, x: list, w: list) -> None:
    """TF Lite runs a CONV_2D whose filter has fewer input channels than its input as a
    grouped convolution of `x[3] / w[3]` groups, and divides the filters among them: a
    group count that does not divide the filter count divides by zero (SIGFPE)."""
    if x[3] % w[3]:
        checker.fail(where, f"input of {x[3]} channels is not a multiple of the filter's "
                            f"{w[3]} input channels (filter shape {w})")  # fmt: skip
    groups = x[3] // w[3]
    if w[0] % groups:
        checker.fail(where, f"{w[0]} filters cannot be split into the {groups} groups of an "
                            f"input of {x[3]} channels and a filter of {w[3]}")  # fmt: skip


def _strict_flexbuffer_value(raw: bytes):
    """Decode a flexbuffer with every read checked against the end of the data.

    Python's `flexbuffers.Buf` wraps negative positions around and shortens slices past
    the end; LCE's C++ reader (`flexbuffers::GetRoot(...).AsMap()`, no verifier) would read
    outside the buffer there instead.
    """
    from flatbuffers import flexbuffers

    class StrictBuf(flexbuffers.Buf):
        def __init__(self, buf, offset):
            if not 0 <= offset <= len(buf):
                raise IndexError("a flexbuffer offset points outside the options")
            super().__init__(buf, offset)

        def __getitem__(self, key):
            # Positions are relative to this view and may reach back (size prefixes).
            if isinstance(key, slice):
                start = self._offset + (0 if key.start is None else key.start)
                stop = self._offset + (self._length if key.stop is None else key.stop)
                if not 0 <= start <= stop <= len(self._buf):
                    raise IndexError("a flexbuffer value lies outside the options")
            elif not 0 <= self._offset + key < len(self._buf):
                raise IndexError("a flexbuffer read outside the options")
            return super().__getitem__(key)

        def Find(self, sub):
            index = super().Find(sub)
            if index < 0:
                raise IndexError("a flexbuffer key is not NUL-terminated")
            return index

        def Slice(self, offset):
            return StrictBuf(self._buf, self._offset + offset)

    if len(raw) < 3:
        raise IndexError("custom options shorter than a flexbuffer root")
    width = raw[-1]
    if width not in (1, 2, 4, 8) or width + 2 > len(raw):
        raise IndexError(f"flexbuffer root width {width}")
    root = flexbuffers.Ref.PackedType(StrictBuf(raw, len(raw) - 2 - width), width, raw[-2])
    return root.Value


def _lce_options(checker: "Checker", where: str, op) -> dict:
    raw = bytes(bytearray(op.customOptions)) if op.customOptions is not None else b""
    try:
        options = _strict_flexbuffer_value(raw)
    except (IndexError, TypeError, ValueError, KeyError, struct.error, RecursionError) as err:
        checker.fail(where, f"custom options are not a readable flexbuffer ({err})")
    if not isinstance(options, dict):
        checker.fail(where, "custom options are not a flexbuffer map")
    return options


def check_lce_operator(checker: "Checker", where: str, name: str, op, ins: list, outs: list):
    """What LCE 0.16's kernels read without checking: options, tensor presence, shapes.

    (Their `Prepare` checks ranks and types; it divides by strides and filter sizes,
    dereferences inputs that are absent (-1), and trusts `channels_in` for the packed
    input's size.)
    """
    fail = checker.fail
    arity = {"LceBconv2d": 5, "LceQuantize": 1, "LceDequantize": 1, "LceBMaxPool2d": 1}.get(name)
    if arity is None:
        return  # an LCE op this module does not know: TF Lite reports it as unresolved
    if len(ins) != arity or len(outs) != 1 or outs[0] is None or ins[0] is None:
        fail(where, f"{len(ins)} inputs and {len(outs)} outputs; LCE expects {arity} and 1")
    shapes = [tensor_shape(t) if t is not None else None for t in ins]
    types = [checker.type_names[t.type] if t is not None else None for t in ins]
    out_shape = tensor_shape(outs[0])
    out_type = checker.type_names[outs[0].type]
    options = _lce_options(checker, where, op) if name in ("LceBconv2d", "LceBMaxPool2d") else {}
    # LCE's im2col and bit-packing assume data: an empty tensor aborts the default kernels.
    if any(0 in shape for shape in shapes if shape is not None) or 0 in out_shape:
        fail(where, f"an empty tensor among inputs {shapes} / output {out_shape}")

    def positive(key: str) -> int:
        value = options.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value < 2**31:
            fail(where, f"option {key!r} = {value!r}, expected a positive integer")
        return value

    def one_of(key: str, allowed) -> None:
        if options.get(key) not in allowed:
            fail(where, f"option {key!r} = {options.get(key)!r}, expected one of {list(allowed)}")

    def packed(channels: int) -> int:
        return -(-channels // _BITPACK)

    def expect_output(x: list, window: list, channels: int) -> None:
        same = options["padding"] in (0, "SAME", "same")
        _expect_window_output(checker, where, x, window, same, channels, out_shape)

    if name == "LceBconv2d":
        for key in ("stride_height", "stride_width", "dilation_height_factor",
                    "dilation_width_factor", "channels_in"):  # fmt: skip
            positive(key)
        one_of("padding", _LCE_PADDING)
        one_of("pad_values", (0, 1))
        one_of("fused_activation_function", _LCE_ACTIVATIONS)
        vectors = (4,) if out_type == "INT32" else (2, 3)  # thresholds, or multiplier + bias
        if ins[1] is None or any(ins[i] is None for i in vectors):
            fail(where, f"inputs {[1, *vectors]} must be present for a {out_type} output")
        x, w, channels = shapes[0], shapes[1], options["channels_in"]
        if len(x) != 4 or len(w) != 4:
            fail(where, f"input shape {x} and filter shape {w}, expected 4-D")
        if types[0] == "INT32" and x[3] != packed(channels):
            fail(where, f"bit-packed input of {x[3]} words for channels_in = {channels}")
        if types[0] != "INT32" and x[3] != channels:
            fail(where, f"input of {x[3]} channels for channels_in = {channels}")
        if types[1] == "INT32" and packed(channels) % w[3]:
            fail(where, f"bit-packed filter of {w[3]} words per position for {channels} channels")
        if any(shapes[i] != [w[0]] for i in vectors):
            fail(where, f"per-channel inputs {[shapes[i] for i in vectors]} for {w[0]} filters")
        window = [(w[1], options["stride_height"], options["dilation_height_factor"]),
                  (w[2], options["stride_width"], options["dilation_width_factor"])]  # fmt: skip
        channels_out = packed(w[0]) if out_type == "INT32" else w[0]
        expect_output(x, window, channels_out)
    elif name == "LceBMaxPool2d":
        for key in ("stride_height", "stride_width", "filter_height", "filter_width"):
            positive(key)
        one_of("padding", _LCE_PADDING)
        if len(shapes[0]) != 4:
            fail(where, f"input shape {shapes[0]}, expected 4-D")
        window = [(options["filter_height"], options["stride_height"], 1),
                  (options["filter_width"], options["stride_width"], 1)]  # fmt: skip
        expect_output(shapes[0], window, shapes[0][3])
    elif name == "LceQuantize":
        x = shapes[0]
        if not x or len(out_shape) != len(x) or out_shape[-1] != packed(x[-1]):
            fail(where, f"output shape {out_shape} for input {x}: last axis packs 32 channels a word")
    elif name == "LceDequantize":
        # The packed input does not say how many channels it holds: LCE unpacks as many
        # as the output has.
        x = shapes[0]
        if types[0] != "INT32" or not out_shape or len(out_shape) != len(x) or x[-1] != packed(out_shape[-1]):
            fail(where, f"{types[0]} input {x} for output {out_shape}: last axis packs 32 channels a word")
