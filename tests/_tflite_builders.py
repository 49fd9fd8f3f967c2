"""Small TFLite flatbuffers built with the TFLite schema's object API (the schema bundled
in TensorFlow), for the guard's tests and fuzz worker: a (grouped) CONV_2D, and control
flow (IF, WHILE, CALL_ONCE) naming subgraphs by index."""

from __future__ import annotations

import flatbuffers
import numpy as np
from tensorflow.lite.python import schema_py_generated as schema


def pack(model) -> bytes:
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _tensor(name: str, shape, buffer: int, dtype=schema.TensorType.FLOAT32):
    t = schema.TensorT()
    t.name, t.shape, t.type, t.buffer = name.encode(), np.array(shape, np.int32), dtype, buffer
    return t


def _buffer(data: bytes | None = None):
    b = schema.BufferT()
    b.data = None if data is None else np.frombuffer(data, np.uint8)
    return b


def _opcode(builtin: int):
    c = schema.OperatorCodeT()
    c.builtinCode, c.deprecatedBuiltinCode, c.version = builtin, min(builtin, 127), 1
    return c


def _operator(opcode: int, inputs, outputs, options_type=0, options=None):
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = opcode, np.array(inputs, np.int32), np.array(outputs, np.int32)
    op.builtinOptionsType, op.builtinOptions = options_type, options
    return op


def _subgraph(tensors, inputs, outputs, operators, name: str):
    g = schema.SubGraphT()
    g.tensors, g.inputs, g.outputs = tensors, np.array(inputs, np.int32), np.array(outputs, np.int32)
    g.operators, g.name = operators, name.encode()
    return g


def _model(subgraphs, codes, buffers):
    m = schema.ModelT()
    m.version, m.subgraphs, m.operatorCodes, m.buffers = 3, subgraphs, codes, buffers
    m.description = b"built by the tests"
    return m


def conv_model(in_channels: int, filter_in_channels: int, filters: int, size: int = 4):
    """One CONV_2D (1x1 filters, VALID, stride 1): input [1, size, size, in_channels],
    filter [filters, 1, 1, filter_in_channels], bias [filters]. TF Lite treats it as a
    grouped convolution of `in_channels / filter_in_channels` groups."""
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(filters, 1, 1, filter_in_channels)).astype("<f4").tobytes()
    tensors = [_tensor("x", [1, size, size, in_channels], 1),
               _tensor("w", [filters, 1, 1, filter_in_channels], 2),
               _tensor("b", [filters], 3),
               _tensor("y", [1, size, size, filters], 4)]  # fmt: skip
    options = schema.Conv2DOptionsT()
    options.padding, options.strideW, options.strideH = schema.Padding.VALID, 1, 1
    options.dilationWFactor = options.dilationHFactor = 1
    conv = _operator(0, [0, 1, 2], [3], schema.BuiltinOptions.Conv2DOptions, options)
    buffers = [_buffer(), _buffer(), _buffer(weights), _buffer(bytes(4 * filters)), _buffer()]
    return _model([_subgraph(tensors, [0], [3], [conv], "main")],
                  [_opcode(schema.BuiltinOperator.CONV_2D)], buffers)  # fmt: skip


def _unary_subgraph(name: str, opcode: int):
    """x [1] float -> abs(x) [1]."""
    tensors = [_tensor("x", [1], 0), _tensor("y", [1], 0)]
    return _subgraph(tensors, [0], [1], [_operator(opcode, [0], [1])], name)


def control_flow_model(kind: str, indices: tuple):
    """Subgraph 0 runs one `kind` operator ("IF", "WHILE", "CALL_ONCE") naming subgraphs
    `indices` (then/else, cond/body, init); subgraphs 1 and 2 compute abs(x) of a [1]
    float, subgraph 3 (a WHILE condition) x < 0 as bool. With indices (1, 2) for IF,
    (3, 1) for WHILE and (1,) for CALL_ONCE the model is valid."""
    codes = [_opcode(getattr(schema.BuiltinOperator, kind)), _opcode(schema.BuiltinOperator.ABS),
             _opcode(schema.BuiltinOperator.LESS)]  # fmt: skip
    buffers = [_buffer(), _buffer(np.zeros(1, "<f4").tobytes())]
    if kind == "IF":
        options = schema.IfOptionsT()
        options.thenSubgraphIndex, options.elseSubgraphIndex = indices
        tensors = [_tensor("cond", [1], 0, schema.TensorType.BOOL), _tensor("x", [1], 0),
                   _tensor("y", [1], 0)]  # fmt: skip
        op = _operator(0, [0, 1], [2], schema.BuiltinOptions.IfOptions, options)
        main = _subgraph(tensors, [0, 1], [2], [op], "main")
    elif kind == "WHILE":
        options = schema.WhileOptionsT()
        options.condSubgraphIndex, options.bodySubgraphIndex = indices
        tensors = [_tensor("x", [1], 0), _tensor("y", [1], 0)]
        op = _operator(0, [0], [1], schema.BuiltinOptions.WhileOptions, options)
        main = _subgraph(tensors, [0], [1], [op], "main")
    else:
        options = schema.CallOnceOptionsT()
        (options.initSubgraphIndex,) = indices
        tensors = [_tensor("x", [1], 0), _tensor("y", [1], 0)]
        op = _operator(0, [], [], schema.BuiltinOptions.CallOnceOptions, options)
        main = _subgraph(tensors, [0], [1], [op, _operator(1, [0], [1])], "main")
    zero = _tensor("zero", [1], 1)
    cond_tensors = [_tensor("x", [1], 0), zero, _tensor("c", [1], 0, schema.TensorType.BOOL)]
    condition = _subgraph(cond_tensors, [0], [2], [_operator(2, [0, 1], [2])], "less")
    subgraphs = [main, _unary_subgraph("abs1", 1), _unary_subgraph("abs2", 1), condition]
    if kind == "CALL_ONCE":  # an init subgraph takes and gives nothing
        subgraphs[1] = _subgraph([], [], [], [], "init")
    return _model(subgraphs, codes, buffers)
