"""Read a TFLite/LCE flatbuffer: its operators, their shapes, types and options.

Parses with the TFLite schema bundled in TensorFlow (LCE's copy as a fallback) and LCE's
custom options with `flatbuffers.flexbuffers`; needs no interpreter.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Iterable

from flatbuffers import flexbuffers

__all__ = ["OperatorInfo", "operator_list", "operator_counts", "count_operators"]


def _schema():
    """The TFLite flatbuffer schema's generated Python classes."""
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
        custom: a custom operator (its `name` is the custom code), not a TFLite builtin.
    """

    index: int
    name: str
    input_shapes: tuple
    output_shapes: tuple
    input_types: tuple
    output_types: tuple
    output_names: tuple
    options: dict
    custom: bool = False

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
    schema, model = _load_model(flatbuffer)
    builtin_names = {
        v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")
    }
    type_names = _tensor_type_names(schema)
    codes = []  # (name, custom?)
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        if code.CustomCode():
            codes.append((code.CustomCode().decode(), True))
        else:  # deprecated_builtin_code is the real one for codes < 127
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            codes.append((builtin_names.get(builtin, "?"), False))
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
        name, custom = codes[op.OpcodeIndex()]
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
                custom=custom,
            )
        )
    return ops


def count_operators(operators: Iterable[OperatorInfo]) -> dict[str, int]:
    """`{operator name: count}` of parsed operators, in order of first appearance."""
    return dict(Counter(op.name for op in operators))


def operator_counts(flatbuffer: bytes) -> dict[str, int]:
    """`{operator name: count}` of a flatbuffer, in order of first appearance."""
    return count_operators(operator_list(flatbuffer))
