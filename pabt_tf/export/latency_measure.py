"""Make a `LatencyTable`: measured on this host in LCE's interpreter (`latency_table`),
or read from a board's `lce_benchmark_model --enable_op_profiling=true` output
(`parse_op_profile`, `table_from_profile`).

Host (`latency_table`): the model is converted as *twins* that differ in one layer's
mask, all timed in one interleaved group (`pabt_tf.export.latency.host_latencies`):
the unpruned twin (every binary convolution active) and per layer a twin with that
layer at one binary convolution, the others unpruned (the BNN twin, every layer at one,
is timed too). Every latency is `Latency.settled_ms`, the median over rounds of each
round's fastest run (another process can only add time to a run). The difference to the
unpruned twin (the median over rounds of per-round differences of the fastest runs, so
load that comes and goes cancels out), divided by `M·N − 1`, is the layer's slope (its
activation bases' bit-packing included: on this host a base's share was within the
noise, so `per_base_ms` is 0); the slopes are scaled by one common factor so that they
add up to the measured unpruned − BNN difference, which makes the table exact at both
ends. A layer's `fixed_ms` is the layer converted alone at one binary convolution, minus
an interpreter call on a model of the same input with a single `RELU`, minus one
`per_conv_ms`; `rest_ms` is the unpruned twin minus every layer unpruned.

Board (`table_from_profile`): TFLite's op profiler prints one row per operator (node
type, times, `[output tensor name]:node index`). Rows are matched to the flatbuffer's
operators by node index (their types must agree), and each operator to the PaBT layer
its output tensor is named after (`<stripped model>/<layer>/…`, `strip_pabt`'s names).
Per layer: `per_conv_ms` is a binary convolution's `LceBconv2d` plus an `ADD` summing
the branches, `per_base_ms` an activation base's shift and bit-packing (`LceQuantize`),
and `fixed_ms` makes the layer at one binary convolution cost one of each.
"""

from __future__ import annotations

import dataclasses
import datetime
import platform
import re
import statistics
import warnings
from typing import Sequence

import numpy as np
import tensorflow as tf

from pabt_tf.export.latency_tables import LatencyTable, LayerLatency
from pabt_tf.layers import PaBTLayer, pabt_layers

__all__ = ["OpTime", "bnn_twin", "latency_table", "parse_op_profile", "table_from_profile"]


def _provenance() -> dict:
    import larq_compute_engine as lce

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "lce_version": getattr(lce, "__version__", ""),
        "tensorflow_version": tf.__version__,
        "machine": f"{platform.machine()} {cpu}".strip(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _row(
    layer: PaBTLayer, fixed: float, per_conv: float, measured: dict, per_base: float = 0.0
) -> LayerLatency:
    shape_in = layer.reference_input_shape
    shape_out = layer.compute_output_shape(shape_in).as_list()
    return LayerLatency(
        layer.name, type(layer).__name__, list(shape_in), shape_out, layer.weight_bases,
        layer.activation_bases, float(fixed), float(per_conv), float(per_base), measured,
    )  # fmt: skip


def _one_mask(layer: PaBTLayer) -> np.ndarray:
    mask = np.zeros((layer.weight_bases, layer.activation_bases), bool)
    mask[0, 0] = True
    return mask


def _paired(a, b) -> float:
    """Median over interleaving rounds of a's fastest run − b's. Another process can only
    add time to a run (on a shared machine, or a core's SMT sibling busy for part of a
    round), so a round's fastest run is its least disturbed one: the slopes are the
    differences of small numbers of milliseconds, and a round's median moved them by a
    third under intermittent load (CI), its minimum does not."""
    return statistics.median(x - y for x, y in zip(a.round_min_ms, b.round_min_ms))


def _alone(layer: PaBTLayer, shape: tuple) -> tuple[tf.keras.Model, tf.keras.Model]:
    """The layer alone at one binary convolution, and a one-`RELU` model of its input."""
    clone = type(layer).from_config(layer.get_config())
    x = tf.keras.Input(batch_shape=(1, *shape[1:]))
    model = tf.keras.Model(x, clone(x), name="alone")
    clone.set_weights(layer.get_weights())
    clone.set_binary_conv_mask(_one_mask(layer))
    y = tf.keras.Input(batch_shape=(1, *shape[1:]))
    return model, tf.keras.Model(y, tf.keras.layers.ReLU()(y), name="overhead")


def bnn_twin(model: tf.keras.Model, input_shape: Sequence[int] | None = None) -> bytes:
    """The model's flatbuffer with every PaBT layer at one binary convolution (the
    latency table's BNN twin): the reference a latency measurement can be paired with.

    The masks are set for the conversion and restored afterwards; weights unchanged.

    # Arguments
        model: a built single-input model with PaBT layers.
        input_shape: the input shape to convert at, batch first; required when the
            model's is not fully known.

    # Returns
        The LCE flatbuffer (bytes).

    # Raises
        ValueError: no PaBT layers, or an unknown input size without `input_shape`.
    """
    from pabt_tf.costs import deploy_input_shape
    from pabt_tf.export.conversion import convert
    from pabt_tf.export.sweep import _masks

    if not pabt_layers(model):
        raise ValueError(f"model {model.name!r} has no PaBT layers.")
    shape = deploy_input_shape(model, input_shape, "input_shape")
    with _masks(model, _one_mask):
        return convert(model, input_shape=shape)


def latency_table(
    model: tf.keras.Model,
    threads: int = 1,
    input_shape: Sequence[int] | None = None,
    kernels: str = "indirect_bgemm",
    rounds: int = 11,
    repeats: int = 7,
    warmup: int = 3,
    seed: int = 0,
    clock: str | None = None,
) -> LatencyTable:
    """Measure a PaBT model's per-layer LCE latency on this host (module docstring).

    The model's masks are set for each twin and restored afterwards; its weights are
    not changed. For a model of unknown input size, `input_shape` is the size measured
    at, and becomes its PaBT layers' reference input shape.

    ```python
    table = pabt.latency_table(model, threads=1)
    table.save("latency_table.json")
    print(table)
    ```

    # Arguments
        model: a built single-input model with PaBT layers.
        threads: LCE interpreter threads.
        input_shape: the input shape to measure at, batch first (`(1, 360, 480, 3)`);
            required when the model's is not fully known.
        kernels: `"indirect_bgemm"` (LCE's fast x86 kernels, default) or `"default"`.
        rounds, repeats, warmup: the interleaved timing schedule (`host_latencies`).
        seed: of the random input.
        clock: `"thread"` (the default with one thread: the interpreter thread's CPU
            time, which is the latency on an idle core and leaves out what other
            processes of a shared machine take) or `"wall"` (the default otherwise);
            see `host_latencies`.

    # Returns
        A `LatencyTable` (`source="host"`).

    # Raises
        ValueError: no PaBT layers, bad arguments, an unknown input size without
            `input_shape`; `ConversionError` if a twin does not convert cleanly.
    """
    from pabt_tf.costs import deploy_input_shape, set_reference_input_shape
    from pabt_tf.export.conversion import convert
    from pabt_tf.export.latency import KERNELS, host_latencies
    from pabt_tf.export.sweep import _masks

    layers = pabt_layers(model)
    if not layers:
        raise ValueError(f"model {model.name!r} has no PaBT layers to time.")
    if kernels not in KERNELS:
        raise ValueError(f"`kernels` must be one of {KERNELS}, got {kernels!r}.")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"`threads` must be a positive integer, got {threads!r}.")
    shape = deploy_input_shape(model, input_shape, "input_shape")
    if any(not layer.has_static_input_shape for layer in layers):
        set_reference_input_shape(model, shape)

    def twin(special: dict[int, np.ndarray]):
        def mask_of(layer):
            full = np.ones((layer.weight_bases, layer.activation_bases), bool)
            return special.get(id(layer), full)

        with _masks(model, mask_of):
            return convert(model, input_shape=shape)

    flatbuffers = {"unpruned": twin({}), "bnn": bnn_twin(model, input_shape=shape)}
    for i, layer in enumerate(layers):
        if layer.num_binary_convs > 1:
            flatbuffers[f"one{i}"] = twin({id(layer): _one_mask(layer)})
    clock = clock or ("thread" if threads == 1 else "wall")
    timing = dict(threads=(threads,), kernels=(kernels,), rounds=rounds, repeats=repeats,
                  warmup=warmup, seed=seed, clock=clock)  # fmt: skip
    network = {r.label: r for r in host_latencies(flatbuffers, **timing)}
    full = network["unpruned"]

    # Slopes measured one layer at a time need not add up to pruning them all at once
    # (caches, the interpreter's arena); one common factor makes the table pass through
    # both measured ends. On the CIFAR-10 backbone it was 0.98, and every latency of a
    # pruning state was then predicted within 1.2 % (the earlier +6 to +24 % came from
    # anchoring at a median while the slopes were made of fastest runs).
    slopes = [_paired(full, network[f"one{i}"]) / (x.num_binary_convs - 1)
              if x.num_binary_convs > 1 else 0.0 for i, x in enumerate(layers)]  # fmt: skip
    bnn = network["bnn"]
    additive = sum(k * (x.num_binary_convs - 1) for k, x in zip(slopes, layers))
    scale = (full.settled_ms - bnn.settled_ms) / additive if additive > 0 else 1.0
    if not 0.5 <= scale <= 2.0:
        warnings.warn(
            f"latency_table: the BNN twin's measured drop is {scale:.2f}x the sum of the "
            "per-layer slopes (expected near 1: the host was too noisy?); slopes left "
            "unscaled, predictions near the BNN may be off.", stacklevel=2,
        )
        scale = 1.0

    rows = []
    for i, layer in enumerate(layers):
        per_conv = scale * slopes[i]
        measured = {"network_unpruned_ms": full.settled_ms, "per_conv_ms_one_at_a_time": slopes[i]}
        if layer.num_binary_convs > 1:
            measured["network_this_at_1_ms"] = network[f"one{i}"].settled_ms
        alone, overhead = _alone(layer, (1, *layer.reference_input_shape[1:]))
        group = {"alone": convert(alone), "overhead": convert(overhead)}
        times = {r.label: r for r in host_latencies(group, **timing)}
        fixed = _paired(times["alone"], times["overhead"]) - per_conv
        measured.update(alone_at_1_ms=times["alone"].settled_ms,
                        overhead_ms=times["overhead"].settled_ms)  # fmt: skip
        rows.append(_row(layer, max(fixed, 0.0), per_conv, measured))
    rest = full.settled_ms - sum(row.ms(row.num_binary_convs) for row in rows)
    how = (
        f"host, LCE Python interpreter ({kernels}, {threads} thread(s)), {rounds}x{repeats} "
        f"interleaved single-sample runs ({clock} clock), each latency the median over "
        "rounds of the round's fastest run: per_conv_ms = (unpruned twin - twin with the "
        "layer at 1) / (M·N - 1), paired per round, times one factor "
        f"({scale:.3f}) that makes the layers' sum match the unpruned - BNN twin; "
        "fixed_ms = the layer alone at 1 minus a one-RELU model minus per_conv_ms; "
        "rest_ms = unpruned twin - every layer unpruned"
    )
    return LatencyTable(
        layers=rows, rest_ms=rest, threads=threads, kernels=kernels, source="host", how=how,
        model=model.name, input_shape=list(shape), bnn_ms=bnn.settled_ms,
        unpruned_ms=full.settled_ms, **_provenance(),
    )  # fmt: skip


# --------------------------------------------------------------------------------------
# A board's op profile
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class OpTime:
    """One row of TFLite's op profile ("Run Order" table).

    # Attributes
        node_type: `"LceBconv2d"`, `"CONV_2D"`, ...
        name: the node's name (its output tensor), without the brackets.
        index: the node index (operator index in the execution plan).
        avg_ms, first_ms: average and first-run time of the node.
        times_called: calls per run.
    """

    node_type: str
    name: str
    index: int
    avg_ms: float
    first_ms: float | None
    times_called: int


_SECTION = "Operator-wise Profiling Info for Regular Benchmark Runs"
_ROW = re.compile(r"^\s*(?P<type>\S.*?)\s+(?P<numbers>(?:-?[0-9.]+%?\s+)+)\[(?P<name>.*)\]:(?P<index>\d+)\s*$")


def parse_op_profile(text: str) -> list[OpTime]:
    """The per-operator times of `benchmark_model` / `lce_benchmark_model` run with
    `--enable_op_profiling=true`: the "Run Order" table of its "Operator-wise Profiling
    Info for Regular Benchmark Runs" section (columns read from the table's header, so
    versions with and without the `[start]` column both parse).

    # Returns
        One `OpTime` per operator, in run order.

    # Raises
        ValueError: the text has no such section or table, or a row does not parse.
    """
    if not isinstance(text, str):
        raise ValueError(f"the profile must be text, got {type(text).__name__}.")
    start = text.find(_SECTION)
    if start < 0:
        raise ValueError(
            f"no op profile found (no {_SECTION!r} section): run the benchmark with "
            "--enable_op_profiling=true."
        )
    lines = text[start:].splitlines()[1:]
    header_at = next((i for i, line in enumerate(lines) if "[node type]" in line), None)
    if header_at is None or "Run Order" not in "".join(lines[: header_at + 1]):
        raise ValueError("op profile: no 'Run Order' table with a '[node type]' header.")
    columns = re.findall(r"\[([^\]]+)\]", lines[header_at])
    numeric = [c for c in columns if c not in ("node type", "Name")]
    for needed in ("avg ms", "times called"):
        if needed not in numeric:
            raise ValueError(f"op profile: the table has no [{needed}] column (columns {columns}).")
    ops = []
    for line in lines[header_at + 1:]:
        if not line.strip() or line.lstrip().startswith("="):
            break
        match = _ROW.match(line)
        if match is None:
            raise ValueError(f"op profile: cannot parse the row {line.strip()!r}.")
        numbers = match.group("numbers").split()
        if len(numbers) != len(numeric):
            raise ValueError(
                f"op profile: the row {line.strip()!r} has {len(numbers)} numbers, the header "
                f"{len(numeric)} ({numeric})."
            )
        values = {c: float(v.rstrip("%")) for c, v in zip(numeric, numbers)}
        ops.append(OpTime(
            node_type=match.group("type").strip(), name=match.group("name"),
            index=int(match.group("index")), avg_ms=values["avg ms"],
            first_ms=values.get("first"), times_called=int(values["times called"]),
        ))  # fmt: skip
    if not ops:
        raise ValueError("op profile: the 'Run Order' table is empty.")
    return ops


def _owner(output_name: str, names: Sequence[str]) -> str | None:
    """The PaBT layer an operator belongs to: the longest layer name that appears as a
    path component of its output tensor's name."""
    found = [n for n in names if f"/{n}/" in f"/{output_name}"]
    return max(found, key=len) if found else None


def table_from_profile(
    model: tf.keras.Model,
    flatbuffer: bytes,
    profile: str,
    threads: int = 1,
    device: str = "",
) -> LatencyTable:
    """A `LatencyTable` from a board's op profile of `flatbuffer` (module docstring).

    `flatbuffer` must be `pabt_tf.convert(model)` (unfused, the default) at the model's
    current masks — typically the unpruned model — and `profile` the output of
    `lce_benchmark_model --graph=<it> --enable_op_profiling=true` on the board.

    # Arguments
        model: the Keras model the flatbuffer was converted from.
        flatbuffer: the converted model that was profiled.
        profile: the benchmark's output text.
        threads: the `--num_threads` of the run.
        device: a description of the board, for the table's `how`.

    # Returns
        A `LatencyTable` (`source="board"`, `kernels="device"`).

    # Raises
        ValueError: the profile does not parse or is not of this flatbuffer, or a PaBT
            layer's operators cannot be found in it.
    """
    from pabt_tf.export.flatbuffer import operator_list

    ops = operator_list(flatbuffer)
    times = parse_op_profile(profile)
    for t in times:
        if t.index >= len(ops) or ops[t.index].name != t.node_type:
            there = ops[t.index].name if t.index < len(ops) else "missing"
            raise ValueError(
                f"op profile is not of this flatbuffer: node {t.index} is {t.node_type} in the "
                f"profile, {there} in the flatbuffer."
            )
    layers = pabt_layers(model)
    if not layers:
        raise ValueError(f"model {model.name!r} has no PaBT layers.")
    shape = _input_shape(flatbuffer)
    if any(not layer.has_static_input_shape for layer in layers):
        from pabt_tf.costs import set_reference_input_shape

        set_reference_input_shape(model, shape)  # the size the flatbuffer was made at
    names = [layer.name for layer in layers]
    per_layer: dict[str, dict[str, float]] = {n: {"bconv": 0.0, "add": 0.0, "base": 0.0} for n in names}
    bconvs = dict.fromkeys(names, 0)
    rest = 0.0
    for t in times:
        op = ops[t.index]
        owner = _owner(op.output_names[0] if op.output_names else "", names)
        if owner is None:
            rest += t.avg_ms
        elif op.is_binary_conv:
            per_layer[owner]["bconv"] += t.avg_ms
            bconvs[owner] += 1
        elif op.name == "ADD" and f"/{owner}/sum" in op.output_names[0]:
            per_layer[owner]["add"] += t.avg_ms
        else:  # the shift and the bit-packing of an activation base
            per_layer[owner]["base"] += t.avg_ms
    rows = []
    for layer in layers:
        k, b = layer.active_binary_convs, int(layer.binary_conv_mask.any(axis=0).sum())
        if bconvs[layer.name] != k:
            raise ValueError(
                f"op profile: found {bconvs[layer.name]} LceBconv2d op(s) named after layer "
                f"{layer.name!r}, which has {k} active binary convolution(s); profile the "
                "unfused export (pabt_tf.convert(model), fused=False) of this model at its "
                "current masks. (Operator names are truncated: a long model name can hide "
                "the layer's; rename the model shorter.)"
            )
        t = per_layer[layer.name]
        conv, add, base = t["bconv"] / k, t["add"] / max(k - 1, 1), t["base"] / b
        full_k, full_b = layer.num_binary_convs, layer.activation_bases
        # ms(k, b) = fixed + (conv + add)·k + base·(b − 1); at (1, 1): base + conv.
        per_conv = conv + add if full_k > 1 else 0.0
        per_base = base if full_b > 1 else 0.0
        measured = {"bconv_ms": conv, "add_ms": add, "activation_base_ms": base,
                    "profiled_at": k}  # fmt: skip
        rows.append(_row(layer, base + conv - per_conv, per_conv, measured, per_base))
    total = sum(t.avg_ms for t in times)
    unpruned = all(layer.active_binary_convs == layer.num_binary_convs for layer in layers)
    bnn = all(layer.active_binary_convs == 1 for layer in layers)
    how = (
        f"board{' ' + device if device else ''}: lce_benchmark_model --enable_op_profiling=true, "
        f"{threads} thread(s), per-op average times of the flatbuffer at "
        f"{'every binary convolution active' if unpruned else 'its masks'}; per layer a "
        "binary convolution's LceBconv2d, an activation base's shift + LceQuantize, the "
        "ADDs of its sum: per_conv_ms = LceBconv2d + ADD, per_base_ms = shift + LceQuantize"
    )
    provenance = _provenance()
    provenance["machine"] = device
    return LatencyTable(
        layers=rows, rest_ms=rest, threads=threads, kernels="device", source="board",
        how=how, model=model.name, input_shape=shape, bnn_ms=total if bnn else None,
        unpruned_ms=total if unpruned else None, **provenance,
    )  # fmt: skip


def _input_shape(flatbuffer: bytes) -> list[int]:
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAs(bytes(flatbuffer), 0)
    graph = model.Subgraphs(0)
    return [int(d) for d in graph.Tensors(graph.Inputs(0)).ShapeAsNumpy()]
