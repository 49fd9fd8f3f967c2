"""The model's references and data: operator codes, tensor/buffer/subgraph indices,
tensor types and sizes, constant data sizes, quantization parameters, signatures, and the
dataflow (each operator reads what is written before it); then each operator's own checks
(`operators`)."""

from __future__ import annotations

import math

from pabt_tf.flatbuffer_guard.operators import check_builtin_operator, check_lce_operator
from pabt_tf.flatbuffer_guard.structure import MalformedFlatbufferError, enum_names, tensor_shape

_SCHEMA_VERSION = 3
# TF Lite's dimension arrays are `int`, and a tensor over 2 GiB cannot live in a flatbuffer
# or an arena the interpreter can address with int offsets.
_MAX_TENSOR_BYTES = 2**31 - 1
# Bytes per element of each TensorType (by name); None: variable size (strings, resources).
_TYPE_BYTES = {
    "FLOAT32": 4, "FLOAT16": 2, "INT32": 4, "UINT8": 1, "INT64": 8, "STRING": None,
    "BOOL": 1, "INT16": 2, "COMPLEX64": 8, "INT8": 1, "FLOAT64": 8, "COMPLEX128": 16,
    "UINT64": 8, "RESOURCE": None, "VARIANT": None, "UINT32": 4, "UINT16": 2,
    "INT4": 0.5, "BFLOAT16": 2,
}  # fmt: skip
# Builtin operators with optional inputs (TF Lite's schema comments); custom operators
# decide for themselves.
_OPTIONAL_INPUT_FAMILIES = ("CONV", "FULLY_CONNECTED", "LSTM", "RNN", "SVDF", "EMBEDDING",
                            "LSH_PROJECTION", "STABLEHLO")  # fmt: skip


class Checker:
    """Semantic checks over an unpacked `ModelT`; `fail` raises with the location."""

    def __init__(self, schema, model, size: int):
        self.schema, self.model, self.size = schema, model, size
        self.type_names = enum_names(schema.TensorType)
        self.builtin_names = enum_names(schema.BuiltinOperator)
        self.buffers = model.buffers or []

    @staticmethod
    def fail(where: str, what: str):
        raise MalformedFlatbufferError(f"malformed TFLite flatbuffer: {where}: {what}.")

    def run(self) -> None:
        model = self.model
        if model.version != _SCHEMA_VERSION:
            self.fail("model", f"schema version {model.version}, expected {_SCHEMA_VERSION}")
        if not model.subgraphs:
            self.fail("model", "no subgraphs")
        if model.buffers is None:
            self.fail("model", "no buffers vector")
        for i, buffer in enumerate(self.buffers):
            self.check_buffer(i, buffer)
        self.codes = [self.opcode_name(i, c) for i, c in enumerate(model.operatorCodes or [])]
        self.calls: dict[int, list] = {}  # subgraph -> [(operator, name, key, subgraph)]
        for s, graph in enumerate(model.subgraphs):
            self.check_subgraph(s, graph)
        self.check_call_cycles()
        for k, signature in enumerate(model.signatureDefs or []):
            self.check_signature(k, signature)

    def check_buffer(self, i: int, buffer) -> None:
        if buffer is None:
            self.fail(f"buffer {i}", "missing table")
        # Data of models over 2 GiB lives after the flatbuffer, at (offset, size).
        if buffer.offset > 1 and buffer.offset + buffer.size > self.size:
            self.fail(
                f"buffer {i}",
                f"external data at bytes {buffer.offset}+{buffer.size} past the end "
                f"({self.size} bytes)",
            )

    def opcode_name(self, i: int, code) -> str:
        if code is None:
            self.fail(f"operator code {i}", "missing table")
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        if builtin not in self.builtin_names:
            self.fail(f"operator code {i}", f"unknown builtin operator {builtin}")
        if code.version < 1:
            self.fail(f"operator code {i}", f"operator version {code.version}")
        name = self.builtin_names[builtin]
        if name == "CUSTOM":
            custom = code.customCode
            if not custom:
                self.fail(f"operator code {i}", "a custom operator without a name")
            try:
                return custom.decode("ascii")
            except UnicodeDecodeError:
                self.fail(f"operator code {i}", f"custom operator name {custom!r} is not text")
        return name

    def tensor_bytes(self, where: str, tensor) -> int | None:
        if tensor.type not in self.type_names:
            self.fail(where, f"unknown tensor type {tensor.type}")
        shape = tensor_shape(tensor)
        if any(d < 0 for d in shape):
            self.fail(where, f"negative dimension in shape {shape}")
        width = _TYPE_BYTES.get(self.type_names[tensor.type])
        if width is None:
            return None
        nbytes = math.ceil(math.prod(shape) * width)
        if nbytes > _MAX_TENSOR_BYTES:
            self.fail(where, f"shape {shape} needs {nbytes} bytes, over 2 GiB")
        return nbytes

    def check_tensor(self, where: str, tensor) -> None:
        if tensor is None:
            self.fail(where, "missing table")
        nbytes = self.tensor_bytes(where, tensor)
        if not 0 <= tensor.buffer < len(self.buffers):
            self.fail(where, f"buffer index {tensor.buffer} outside 0..{len(self.buffers) - 1}")
        data = self.buffers[tensor.buffer].data
        if data is not None and len(data) and nbytes is not None and tensor.sparsity is None:
            if len(data) != nbytes:
                self.fail(
                    where,
                    f"constant data of {len(data)} bytes, but shape {tensor_shape(tensor)} of "
                    f"{self.type_names[tensor.type]} needs {nbytes}",
                )
        q = tensor.quantization
        if q is not None and q.scale is not None and len(q.scale):
            shape = tensor_shape(tensor)
            zero_points = q.zeroPoint if q.zeroPoint is not None else []
            if len(zero_points) and len(zero_points) != len(q.scale):
                self.fail(where, f"{len(q.scale)} scales but {len(zero_points)} zero points")
            if len(q.scale) > 1:
                axis = q.quantizedDimension
                if not 0 <= axis < len(shape) or shape[axis] != len(q.scale):
                    self.fail(where, f"{len(q.scale)} per-channel scales along axis {axis} "
                                     f"of shape {shape}")  # fmt: skip

    def check_indices(self, where: str, indices, count: int, optional: bool) -> list:
        indices = [int(i) for i in (indices if indices is not None else [])]
        low = -1 if optional else 0
        for i in indices:
            if not low <= i < count:
                self.fail(where, f"tensor index {i} outside 0..{count - 1}")
        return indices

    def check_subgraph(self, s: int, graph) -> None:
        where = f"subgraph {s}"
        if graph is None:
            self.fail(where, "missing table")
        if graph.tensors is None:
            self.fail(where, "no tensors vector")
        tensors = graph.tensors
        for t, tensor in enumerate(tensors):
            self.check_tensor(f"{where}, tensor {t}", tensor)
        inputs = self.check_indices(f"{where} inputs", graph.inputs, len(tensors), optional=False)
        outputs = self.check_indices(f"{where} outputs", graph.outputs, len(tensors), optional=False)
        operators = graph.operators or []
        for o, op in enumerate(operators):
            self.check_operator(f"{where}, operator {o}", op, tensors)
            for options in (op.builtinOptions, op.builtinOptions2):
                self.calls.setdefault(s, []).extend(
                    (o, self.codes[op.opcodeIndex], key, index)
                    for key, index in self.subgraph_references(options)
                )
        self.check_dataflow(where, tensors, inputs, outputs, operators)

    def check_dataflow(self, where: str, tensors: list, inputs: list, outputs: list, operators: list):
        """Operators run in the stored order: each reads tensors that hold data by then
        (inputs, constants, variables, earlier outputs) and writes tensors nothing else
        writes. A rewired index breaks this; TF Lite then reads unset memory."""
        ready = set(inputs)
        for t, tensor in enumerate(tensors):
            buffer = self.buffers[tensor.buffer]
            has_data = buffer.data is not None and len(buffer.data) or buffer.offset > 1
            if has_data or tensor.isVariable or 0 in tensor_shape(tensor):
                ready.add(t)
        for o, op in enumerate(operators):
            for t in op.inputs if op.inputs is not None else []:
                if t >= 0 and t not in ready:
                    self.fail(f"{where}, operator {o} ({self.codes[op.opcodeIndex]})",
                              f"reads tensor {t} before any operator writes it")  # fmt: skip
            for t in op.outputs if op.outputs is not None else []:
                if t in ready and not tensors[t].isVariable:
                    self.fail(f"{where}, operator {o} ({self.codes[op.opcodeIndex]})",
                              f"writes tensor {t}, which is an input, a constant or written before")  # fmt: skip
                ready.add(t)
        for t in outputs:
            if t not in ready:
                self.fail(where, f"output tensor {t} is never written")

    def check_operator(self, where: str, op, tensors: list) -> None:
        if op is None:
            self.fail(where, "missing table")
        if not 0 <= op.opcodeIndex < len(self.codes):
            self.fail(where, f"operator code index {op.opcodeIndex} outside 0..{len(self.codes) - 1}")
        name = self.codes[op.opcodeIndex]
        where = f"{where} ({name})"
        ins = self.check_indices(f"{where} inputs", op.inputs, len(tensors), optional=True)
        outs = self.check_indices(f"{where} outputs", op.outputs, len(tensors), optional=True)
        self.check_indices(f"{where} intermediates", op.intermediates, len(tensors), optional=True)
        # Kernels dereference the tensors they read: an absent (-1) one is only valid
        # where the operator defines optional inputs (biases, recurrent gates...).
        may_omit = name not in self.builtin_names.values() or any(
            family in name for family in _OPTIONAL_INPUT_FAMILIES
        )
        if -1 in outs or ins[:1] == [-1] or (-1 in ins and not may_omit):
            self.fail(where, f"absent (-1) tensor among inputs {ins} / outputs {outs}")
        if op.largeCustomOptionsOffset > 1:
            end = op.largeCustomOptionsOffset + op.largeCustomOptionsSize
            if end > self.size:
                self.fail(where, f"custom options end at byte {end}, past the end ({self.size})")
        for options in (op.builtinOptions, op.builtinOptions2):
            self.check_subgraph_references(where, options)
        if name in self.builtin_names.values():
            check_builtin_operator(self, where, name, op, tensors)
        if name.startswith("Lce"):
            check_lce_operator(self, where, name, op, [tensors[i] if i >= 0 else None for i in ins],
                                [tensors[i] if i >= 0 else None for i in outs])  # fmt: skip

    def check_signature(self, k: int, signature) -> None:
        where = f"signature {k}"
        if signature is None:
            self.fail(where, "missing table")
        if not 0 <= signature.subgraphIndex < len(self.model.subgraphs):
            self.fail(where, f"subgraph index {signature.subgraphIndex} is not a subgraph")
        count = len(self.model.subgraphs[signature.subgraphIndex].tensors)
        names = [signature.signatureKey]
        for entry in (signature.inputs or []) + (signature.outputs or []):
            if entry is None:
                self.fail(where, "missing tensor map")
            self.check_indices(where, [entry.tensorIndex], count, optional=False)
            names.append(entry.name)
        for name in names:
            try:
                (name or b"").decode("utf-8")
            except UnicodeDecodeError:
                self.fail(where, f"name {name!r} is not UTF-8 text")

    @staticmethod
    def subgraph_references(options) -> list[tuple[str, int]]:
        """`(option, subgraph index)` of every option naming a subgraph: control flow (IF,
        WHILE, CALL_ONCE, CALL) and StableHLO regions (bodies, branches, comparators)."""
        found = []
        for key, value in (vars(options) if options is not None else {}).items():
            if "ubgraph" not in key:
                continue
            many = isinstance(value, (list, tuple)) or hasattr(value, "shape")
            found += [(key, int(index)) for index in (value if many else [value])]
        return found

    def check_subgraph_references(self, where: str, options) -> None:
        for key, index in self.subgraph_references(options):
            if not 0 <= index < len(self.model.subgraphs):
                self.fail(where, f"{key} {index} is not a subgraph")

    def check_call_cycles(self) -> None:
        """No subgraph may (through others) run itself: TF Lite's control-flow kernels
        prepare and invoke the subgraphs they name recursively, with no depth limit, so a
        cycle recurses until the stack overflows (SIGSEGV)."""
        done: set[int] = set()
        for root in range(len(self.model.subgraphs)):
            if root in done:
                continue
            path, calls = [root], [iter(self.calls.get(root, []))]  # depth-first, no recursion
            on_path = {root}
            while path:
                step = next(calls[-1], None)
                if step is None:
                    done.add(path[-1])
                    on_path.discard(path.pop())
                    calls.pop()
                    continue
                o, name, key, callee = step
                if callee in on_path:
                    cycle = " -> ".join(map(str, path[path.index(callee):] + [callee]))
                    self.fail(f"subgraph {path[-1]}, operator {o} ({name})",
                              f"{key} {callee} closes a cycle of subgraph calls ({cycle}): "
                              "running it would recurse without end")  # fmt: skip
                if callee not in done:
                    path.append(callee)
                    on_path.add(callee)
                    calls.append(iter(self.calls.get(callee, [])))
