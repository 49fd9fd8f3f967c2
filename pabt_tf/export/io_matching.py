"""Which input and output of a flatbuffer is which of the Keras model's, by name.

LCE's interpreter takes inputs and returns outputs in the flatbuffer's subgraph order,
which need not be Keras': the converter goes through a SavedModel whose serving
signature is a dict keyed by the output names, and the TFLite converter orders the
subgraph's inputs and outputs its own way, by their names rather than Keras' order
(measured with LCE 0.16: outputs `["a_cls", "z_seg/sum"]` come out `z_seg/sum` first in
either Keras order, `["z_logits", "a_map"]` `a_map` first; inputs `["in_2", "in_1"]`
come out `in_1` first, `["b_in", "a_in"]` in order). The interpreter exposes only shapes and types, so the names come
from the flatbuffer itself: its `SignatureDef` maps each Keras input and output name to a
subgraph tensor. Without one (LCE's graph-def fallback, taken when the SavedModel path
fails, writes none) inputs keep the Keras input names as tensor names, and outputs are
`Identity`, `Identity_1`, ... in the sorted order of the Keras output names (that path
flattens a dict keyed by them, which sorts its keys). A model with one input and one
output needs no names.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Sequence

import numpy as np
import tensorflow as tf

from pabt_tf.export.flatbuffer import _load_model

__all__ = ["FlatbufferIO", "IOMatch", "flatbuffer_io", "match_io", "model_inputs"]


@dataclasses.dataclass(frozen=True)
class FlatbufferIO:
    """The inputs and outputs of a flatbuffer's main subgraph, in interpreter order.

    # Attributes
        inputs, outputs: per position, the `SignatureDef` name if the flatbuffer has a
            serving signature, else the subgraph tensor's name.
        input_shapes, output_shapes: per position, the tensor's shape (batch included).
        signature: whether the names come from a `SignatureDef`.
    """

    inputs: tuple
    outputs: tuple
    input_shapes: tuple
    output_shapes: tuple
    signature: bool


@dataclasses.dataclass(frozen=True)
class IOMatch:
    """For each Keras input and output (in `model.inputs` / `model.outputs` order), its
    position in the flatbuffer, and the name it was matched by.

    # Attributes
        inputs, outputs: flatbuffer positions, one per Keras input / output.
        input_names, output_names: the Keras model's names (`model.input_names` /
            `model.output_names`), whatever names they were matched by.
        by: how they were matched: `"position"` (one input and one output),
            `"signature"`, `"tensor names"`, or `"shape"`.
    """

    inputs: tuple
    outputs: tuple
    input_names: tuple
    output_names: tuple
    by: str


def _signature(model, graph_index: int = 0):
    """The serving `SignatureDef` of subgraph `graph_index` (`serving_default` if several)."""
    found = [model.SignatureDefs(i) for i in range(model.SignatureDefsLength())]
    found = [s for s in found if s.SubgraphIndex() == graph_index]
    if len(found) > 1:
        named = [s for s in found if (s.SignatureKey() or b"").decode() == "serving_default"]
        found = named or found[:1]
    return found[0] if found else None


def flatbuffer_io(flatbuffer: bytes) -> FlatbufferIO:
    """The names and shapes of a flatbuffer's inputs and outputs, in the order LCE's
    interpreter takes and returns them (its main subgraph's).

    # Raises
        TypeError / ValueError: `flatbuffer` is not a TFLite flatbuffer.
    """
    _, model = _load_model(flatbuffer)
    graph = model.Subgraphs(0)
    ins = [int(graph.Inputs(i)) for i in range(graph.InputsLength())]
    outs = [int(graph.Outputs(i)) for i in range(graph.OutputsLength())]

    def shape(index: int) -> tuple:
        t = graph.Tensors(index)
        return tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()

    names = {i: (graph.Tensors(i).Name() or b"").decode() for i in ins + outs}
    signature = _signature(model)
    if signature is not None:
        by_tensor = {}
        for maps, count in ((signature.Inputs, signature.InputsLength()),
                            (signature.Outputs, signature.OutputsLength())):  # fmt: skip
            for j in range(count):
                entry = maps(j)
                by_tensor[int(entry.TensorIndex())] = (entry.Name() or b"").decode()
        if all(i in by_tensor for i in ins + outs):
            names = by_tensor
        else:
            signature = None  # a signature that does not cover the subgraph: not used
    return FlatbufferIO(
        inputs=tuple(names[i] for i in ins),
        outputs=tuple(names[i] for i in outs),
        input_shapes=tuple(shape(i) for i in ins),
        output_shapes=tuple(shape(i) for i in outs),
        signature=signature is not None,
    )


def _tensor_name(name: str) -> str:
    """A Keras input name from a subgraph tensor name: `serving_default_x:0` → `x`."""
    if name.startswith("serving_default_"):
        name = name[len("serving_default_"):]
    head, sep, tail = name.rpartition(":")
    return head if sep and tail.isdigit() else name


def _positions(wanted: Sequence[str], found: Sequence[str]) -> tuple | None:
    """Position in `found` of each of `wanted`, or None unless they are the same names."""
    if len(set(wanted)) != len(wanted) or sorted(wanted) != sorted(found):
        return None
    return tuple(list(found).index(name) for name in wanted)


def _by_shape(keras_shapes: Sequence[tuple], shapes: Sequence[tuple]) -> tuple | None:
    """Positions by sample shape, if every Keras shape matches exactly one."""
    positions = []
    for want in keras_shapes:
        hits = [j for j, have in enumerate(shapes) if _same_shape(want, have)]
        if len(hits) != 1:
            return None
        positions.append(hits[0])
    return tuple(positions) if len(set(positions)) == len(positions) else None


def _same_shape(keras_shape: tuple, flatbuffer_shape: tuple) -> bool:
    """Sample shapes agree (batch axis left out; an unknown Keras dimension matches)."""
    want, have = tuple(keras_shape)[1:], tuple(flatbuffer_shape)[1:]
    return len(want) == len(have) and all(w is None or w == h for w, h in zip(want, have))


def _shape(tensor) -> tuple:
    return tuple(tf.TensorShape(tensor.shape).as_list())


def _name_candidates(model: tf.keras.Model):
    """`(input_names, output_names)` the converter may have written for `model`: its own,
    then (for a PaBT model) those of its stripped versions, which rename a PaBT layer
    that is an output (`"<layer>/sum"`, ...). Stripped lazily: only if needed."""
    yield (tuple(getattr(model, "input_names", None) or ()),
           tuple(getattr(model, "output_names", None) or ()))
    from pabt_tf.layers import pabt_layers

    if not pabt_layers(model):
        return
    from pabt_tf.export.strip import strip_pabt

    for fused in (False, True):
        try:
            stripped = strip_pabt(model, fused=fused)
        except (TypeError, ValueError):
            return
        yield tuple(stripped.input_names or ()), tuple(stripped.output_names or ())


def match_io(model: tf.keras.Model, flatbuffer: bytes) -> IOMatch:
    """Match the Keras model's inputs and outputs to the flatbuffer's, by name.

    In order: one input and one output match by position; else by the flatbuffer's
    serving `SignatureDef` (what LCE writes), the Keras names being `model.input_names`
    and `model.output_names` (or, for a PaBT model, its stripped model's: a PaBT layer
    as an output is renamed by `strip_pabt`); else by the tensor names LCE's graph-def
    conversion writes (module docstring); else by sample shape when each shape is
    unique. Every matched pair must then have the same sample shape.

    # Arguments
        model: the Keras model the flatbuffer was converted from (PaBT or stripped).
        flatbuffer: the converted model.

    # Returns
        An `IOMatch`.

    # Raises
        ValueError: the numbers of inputs or outputs differ, no rule matches them all
            (names and shapes ambiguous), or a matched pair's shapes differ; the
            message lists both sides.
    """
    io = flatbuffer_io(flatbuffer)
    in_names = tuple(getattr(model, "input_names", None) or ())
    out_names = tuple(getattr(model, "output_names", None) or ())
    if not getattr(model, "inputs", None) or not getattr(model, "outputs", None):
        # A subclassed model: no graph to read names or shapes from.
        if len(io.inputs) == len(io.outputs) == 1:
            return IOMatch((0,), (0,), in_names, out_names, "position")
        raise ValueError(
            f"the flatbuffer has {len(io.inputs)} inputs and {len(io.outputs)} outputs, and "
            f"the model ({type(model).__name__}) has no inputs and outputs to match them to "
            "by name (a subclassed model): verify a functional or Sequential model."
        )
    keras_in = [_shape(t) for t in model.inputs]
    keras_out = [_shape(t) for t in model.outputs]
    for what, keras, found in (("inputs", keras_in, io.inputs), ("outputs", keras_out, io.outputs)):
        if len(keras) != len(found):
            raise ValueError(
                f"the model has {len(keras)} {what} and the flatbuffer {len(found)} "
                f"({list(found)}): it was not converted from this model."
            )
    match = None
    if len(keras_in) == 1 and len(keras_out) == 1:
        match = IOMatch((0,), (0,), in_names, out_names, "position")
    elif io.signature:
        for ins, outs in _name_candidates(model):
            found_in, found_out = _positions(ins, io.inputs), _positions(outs, io.outputs)
            if found_in is not None and found_out is not None:
                # Reported under the model's own names (stripping keeps the order).
                match = IOMatch(found_in, found_out, in_names, out_names, "signature")
                break
    else:
        # LCE's graph-def path ordered the outputs by the names of the model it converted:
        # the stripped model's for a PaBT model (the last candidates), else the model's own.
        ins, outs = list(itertools.islice(_name_candidates(model), 2))[-1]
        found_in = _positions(ins, [_tensor_name(n) for n in io.inputs])
        identities = ["Identity"] + [f"Identity_{k}" for k in range(1, len(io.outputs))]
        if found_in is not None and list(io.outputs) == identities and len(set(outs)) == len(outs):
            order = sorted(outs)  # traced into a dict keyed by output name, then flattened
            found_out = tuple(order.index(name) for name in outs)
            match = IOMatch(found_in, found_out, in_names, out_names, "tensor names")
    if match is None:
        found_in, found_out = _by_shape(keras_in, io.input_shapes), _by_shape(keras_out, io.output_shapes)
        if found_in is not None and found_out is not None:
            match = IOMatch(found_in, found_out, in_names, out_names, "shape")
    if match is None:
        raise ValueError(
            "cannot tell which of the flatbuffer's inputs and outputs are the model's: "
            f"the model has inputs {list(in_names)} {keras_in} and outputs "
            f"{list(out_names)} {keras_out}; the flatbuffer has inputs {list(io.inputs)} "
            f"{list(io.input_shapes)} and outputs {list(io.outputs)} "
            f"{list(io.output_shapes)}{'' if io.signature else ' and no serving signature'}"
            ", and neither the names nor unique shapes match them."
        )
    for what, keras, shapes, positions, names in (
        ("input", keras_in, io.input_shapes, match.inputs, match.input_names),
        ("output", keras_out, io.output_shapes, match.outputs, match.output_names),
    ):
        for k, (want, j) in enumerate(zip(keras, positions)):
            if not _same_shape(want, shapes[j]):
                name = names[k] if k < len(names) else str(k)
                raise ValueError(
                    f"the model's {what} {name!r} has shape {want}, the flatbuffer's "
                    f"{shapes[j]}: it was not converted from this model."
                )
    return match


def model_inputs(model: tf.keras.Model, inputs, arg: str = "`inputs`") -> list[np.ndarray]:
    """`inputs` as one array per model input, in `model.inputs` order.

    A model with one input takes an array (or a list holding one array); a model with
    several a list or tuple in `model.inputs` order, or a dict keyed by
    `model.input_names`. Float inputs become float32, others keep their Keras dtype.

    # Raises
        ValueError: the wrong number of arrays, unknown or missing names, empty or
            unequal numbers of samples.
    """
    keras_inputs = list(getattr(model, "inputs", None) or [])
    names = list(getattr(model, "input_names", None) or [])
    count = max(len(keras_inputs), 1)
    if isinstance(inputs, dict):
        if sorted(map(str, inputs)) != sorted(names) or len(names) != count:
            raise ValueError(
                f"{arg}: a dict must hold exactly the model's inputs {names}, got keys "
                f"{sorted(map(str, inputs))}."
            )
        arrays = [inputs[name] for name in names]
    elif count == 1:
        single = isinstance(inputs, (list, tuple)) and len(inputs) == 1 and hasattr(inputs[0], "shape")
        arrays = [inputs[0] if single else inputs]
    elif isinstance(inputs, (list, tuple)) and len(inputs) == count:
        arrays = list(inputs)
    else:
        got = f"a list of {len(inputs)}" if isinstance(inputs, (list, tuple)) else type(inputs).__name__
        raise ValueError(
            f"{arg}: the model has {count} inputs {names}; give a list of {count} arrays "
            f"in that order or a dict keyed by those names, got {got}."
        )
    converted = []
    for k, x in enumerate(arrays):
        dtype = tf.as_dtype(keras_inputs[k].dtype) if keras_inputs else tf.float32
        x = np.asarray(x, np.float32 if dtype.is_floating else dtype.as_numpy_dtype)
        what = arg if count == 1 else f"{arg} for input {names[k] if k < len(names) else k!r}"
        if x.ndim < 1 or len(x) == 0:
            raise ValueError(f"{what} must hold at least one sample (leading batch axis).")
        converted.append(x)
    if len({len(x) for x in converted}) > 1:
        raise ValueError(
            f"{arg}: every input must hold the same number of samples, got "
            f"{[len(x) for x in converted]} for {names}."
        )
    return converted


def fed(arrays: list[np.ndarray]):
    """What Keras' `predict` takes: the array of a single-input model, else the list."""
    return arrays[0] if len(arrays) == 1 else arrays
