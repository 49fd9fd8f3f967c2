"""`LatencyTable`: a PaBT network's LCE latency as a function of its active binary
convolutions, per layer — a small JSON file to save, inspect and pass around.

Each PaBT layer `l` has a line in its active binary convolutions `k_l` and active
activation bases `b_l` (each one bit-packs the layer's input once),

    ms_l(k, b) = fixed_ms_l + per_conv_ms_l · k + per_base_ms_l · (b − 1)

and the network's predicted latency is `rest_ms + Σ_l ms_l(k_l, b_l)` (`rest_ms`: every
operator that belongs to no PaBT layer). Given only counts, `b` is the fewest bases that
hold `k` convolutions, `ceil(k / M)`. A table comes from this host
(`pabt_tf.export.latency_table(model)`, LCE's interpreter, `pabt_tf.export.latency_measure`)
or from a board (`LatencyTable.from_profile`, `lce_benchmark_model
--enable_op_profiling=true`); `how` says which, and how it was measured.
`PaBTPruningCallback(latency_budget_ms=..., latency_table=...)` prunes to a target with
it, and `pabt.summary(model, latency_table=...)` shows the per-layer predictions.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from typing import Any, Mapping, Sequence

__all__ = ["LatencyTable", "LayerLatency", "TABLE_FORMAT"]

TABLE_FORMAT = "pabt_tf.latency_table"
_VERSION = 1


def _shape(value: Any) -> list | None:
    return None if value is None else [None if d is None else int(d) for d in value]


@dataclasses.dataclass
class LayerLatency:
    """One PaBT layer's row of a `LatencyTable`.

    # Attributes
        name, type: the layer's name and class (`"PaBTConv2D"`).
        input_shape, output_shape: per example, batch dimension first as `None`, at the
            size the table was measured.
        weight_bases, activation_bases: `M`, `N`.
        fixed_ms: what the layer costs whatever its count (bit-packing its input, the
            output transform).
        per_conv_ms: what each active binary convolution adds.
        per_base_ms: what each active activation base beyond the first adds (its
            shift and bit-packing).
        measured: the raw timings the row was fitted from (`{"k=1": ms, ...}`; which
            ones depends on the source, see the table's `how`).
    """

    name: str
    type: str
    input_shape: list | None
    output_shape: list | None
    weight_bases: int
    activation_bases: int
    fixed_ms: float
    per_conv_ms: float
    per_base_ms: float = 0.0
    measured: dict = dataclasses.field(default_factory=dict)

    @property
    def num_binary_convs(self) -> int:
        return self.weight_bases * self.activation_bases

    def ms(self, k: int, bases: int | None = None) -> float:
        """Predicted latency of the layer with `k` active binary convolutions on `bases`
        activation bases (default `ceil(k / M)`)."""
        if bases is None:
            bases = -(-int(k) // self.weight_bases)
        return self.fixed_ms + self.per_conv_ms * k + self.per_base_ms * (bases - 1)


@dataclasses.dataclass
class LatencyTable:
    """Per-layer LCE latency of a PaBT network (see the module docstring).

    # Attributes
        layers: one `LayerLatency` per PaBT layer, in the model's order.
        rest_ms: the operators outside the PaBT layers.
        threads: interpreter / benchmark threads.
        kernels: `"indirect_bgemm"`, `"default"` (host) or `"device"` (a board).
        source: `"host"` or `"board"`.
        how: how it was measured, in words.
        model: the model's name; input_shape: the model input it was measured at.
        bnn_ms, unpruned_ms: measured latency of the network with every layer at one
            binary convolution and with every one active (`None` where not measured).
        lce_version, tensorflow_version, machine, created: provenance.
    """

    layers: list
    rest_ms: float
    threads: int
    kernels: str
    source: str
    how: str
    model: str = ""
    input_shape: list | None = None
    bnn_ms: float | None = None
    unpruned_ms: float | None = None
    lce_version: str = ""
    tensorflow_version: str = ""
    machine: str = ""
    created: str = ""

    # -- predictions -------------------------------------------------------------------

    def layer(self, name: str) -> LayerLatency:
        for row in self.layers:
            if row.name == name:
                return row
        raise KeyError(f"no layer {name!r} in the latency table (it has {self.layer_names}).")

    @property
    def layer_names(self) -> list[str]:
        return [row.name for row in self.layers]

    def _counts(self, counts: Sequence[int] | Mapping[str, int]) -> list[int]:
        if isinstance(counts, Mapping):
            unknown = sorted(set(counts) - set(self.layer_names))
            missing = [n for n in self.layer_names if n not in counts]
            if unknown or missing:
                raise ValueError(
                    f"`counts` must give every layer of the table: unknown {unknown}, "
                    f"missing {missing}."
                )
            counts = [counts[n] for n in self.layer_names]
        counts = list(counts)
        if len(counts) != len(self.layers):
            raise ValueError(
                f"`counts` must have one entry per layer ({len(self.layers)}), got {len(counts)}."
            )
        for row, k in zip(self.layers, counts):
            if isinstance(k, bool) or not isinstance(k, int) and not hasattr(k, "__index__"):
                raise ValueError(f"`counts` for {row.name} must be an integer, got {k!r}.")
            if not 1 <= int(k) <= row.num_binary_convs:
                raise ValueError(
                    f"`counts` for {row.name} must be in 1..{row.num_binary_convs}, got {k!r}."
                )
        return [int(k) for k in counts]

    def predict(self, counts: Sequence[int] | Mapping[str, int]) -> float:
        """Predicted latency (ms) with `counts[l]` active binary convolutions in layer `l`
        (a sequence in the table's order, or `{layer name: count}`), each on the fewest
        activation bases that hold them (`predict_masks` counts the real ones).

        # Raises
            ValueError: a count missing, out of `1..M·N` or not an integer.
        """
        counts = self._counts(counts)
        return self.rest_ms + sum(row.ms(k) for row, k in zip(self.layers, counts))

    def predict_masks(self, masks: Sequence[Any]) -> float:
        """Predicted latency (ms) with each layer's `(M, N)` mask of active binary
        convolutions (in the table's order).

        # Raises
            ValueError: a mask of the wrong shape or with nothing active.
        """
        import numpy as np

        masks = [np.asarray(m, bool) for m in masks]
        if len(masks) != len(self.layers):
            raise ValueError(
                f"`masks` must have one entry per layer ({len(self.layers)}), got {len(masks)}."
            )
        total = self.rest_ms
        for row, mask in zip(self.layers, masks):
            if mask.shape != (row.weight_bases, row.activation_bases) or not mask.any():
                raise ValueError(
                    f"`masks` for {row.name} must be a ({row.weight_bases}, "
                    f"{row.activation_bases}) mask with an active entry, got {mask.tolist()}."
                )
            total += row.ms(int(mask.sum()), int(mask.any(axis=0).sum()))
        return total

    def predict_model(self, model) -> float:
        """Predicted latency (ms) of `model` at its current masks (`check_model` first)."""
        from pabt_tf.layers import pabt_layers

        self.check_model(model)
        return self.predict_masks([layer.binary_conv_mask for layer in pabt_layers(model)])

    def range_ms(self, floor: int = 1) -> tuple[float, float]:
        """`(lowest, highest)` predicted latency: every layer at `min(floor, M·N)` binary
        convolutions, and every one active."""
        low = [min(floor, row.num_binary_convs) for row in self.layers]
        return self.predict(low), self.predict([row.num_binary_convs for row in self.layers])

    # -- matching a model --------------------------------------------------------------

    def check_model(self, model) -> None:
        """Check the table describes `model`'s PaBT layers: the same layers in the same
        order, each with the same class, bases and input/output shapes (dimensions the
        model leaves unknown match any; they are taken at the layer's reference input
        shape where one is set).

        # Raises
            ValueError: naming the first layer that does not match and how.
        """
        from pabt_tf.layers import pabt_layers

        layers = pabt_layers(model)
        names = [layer.name for layer in layers]
        if names != self.layer_names:
            extra = [n for n in names if n not in self.layer_names]
            missing = [n for n in self.layer_names if n not in names]
            first = (extra or missing or [n for n, t in zip(names, self.layer_names) if n != t])[0]
            raise ValueError(
                f"latency table does not match model {model.name!r}: layer {first!r} "
                f"(model's PaBT layers {names}, table's {self.layer_names})."
            )
        for layer, row in zip(layers, self.layers):
            shape_in = layer.reference_input_shape or tuple(layer._built_input_shape.as_list())
            shape_out = tuple(layer.compute_output_shape(shape_in).as_list())
            problems = []
            if type(layer).__name__ != row.type:
                problems.append(f"type {type(layer).__name__} vs {row.type}")
            if (layer.weight_bases, layer.activation_bases) != (row.weight_bases, row.activation_bases):
                problems.append(
                    f"bases {layer.weight_bases}x{layer.activation_bases} vs "
                    f"{row.weight_bases}x{row.activation_bases}"
                )
            for what, mine, theirs in (("input", shape_in, row.input_shape),
                                       ("output", shape_out, row.output_shape)):  # fmt: skip
                if theirs is None:
                    continue
                if len(mine) != len(theirs) or any(
                    a is not None and b is not None and a != b for a, b in zip(mine[1:], theirs[1:])
                ):
                    problems.append(f"{what} shape {tuple(mine)} vs {tuple(theirs)}")
            if problems:
                raise ValueError(
                    f"latency table does not match model {model.name!r}: layer {layer.name!r} "
                    f"differs ({'; '.join(problems)}; model vs table)."
                )

    # -- JSON ------------------------------------------------------------------------

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        return {"format": TABLE_FORMAT, "version": _VERSION, **data}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: Any, what: str = "latency table") -> "LatencyTable":
        """# Raises
            ValueError: naming `what` and the first field that is missing or malformed.
        """
        if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
            raise ValueError(f"{what} is not a pabt_tf latency table (no \"format\": \"{TABLE_FORMAT}\").")
        if data.get("version") != _VERSION:
            raise ValueError(f"{what}: unsupported version {data.get('version')!r} (expected {_VERSION}).")

        def number(value, field, optional=False):
            if optional and value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{what}: `{field}` must be a finite number, got {value!r}.")
            return float(value)

        rows = data.get("layers")
        if not isinstance(rows, list) or not rows:
            raise ValueError(f"{what}: `layers` must be a non-empty list.")
        layers = []
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise ValueError(f"{what}: layers[{i}] must be an object, got {row!r}.")
            try:
                name, kind = row["name"], row["type"]
                bases = (row["weight_bases"], row["activation_bases"])
            except KeyError as err:
                raise ValueError(f"{what}: layers[{i}] has no {err.args[0]!r}.") from None
            if not isinstance(name, str) or not isinstance(kind, str) or not all(
                isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in bases
            ):
                raise ValueError(f"{what}: layers[{i}] has a malformed name, type or bases.")
            shapes = []
            for field in ("input_shape", "output_shape"):
                shape = row.get(field)
                if shape is not None and (not isinstance(shape, list) or not all(
                    d is None or (isinstance(d, int) and not isinstance(d, bool)) for d in shape
                )):  # fmt: skip
                    raise ValueError(f"{what}: layers[{i}].{field} must be a list of ints, got {shape!r}.")
                shapes.append(_shape(shape))
            measured = row.get("measured", {})
            if not isinstance(measured, dict):
                raise ValueError(f"{what}: layers[{i}].measured must be an object.")
            layers.append(LayerLatency(
                name, kind, *shapes, *bases,
                number(row.get("fixed_ms"), f"layers[{i}].fixed_ms"),
                number(row.get("per_conv_ms"), f"layers[{i}].per_conv_ms"),
                number(row.get("per_base_ms", 0.0), f"layers[{i}].per_base_ms"),
                measured,
            ))  # fmt: skip
        threads = data.get("threads")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"{what}: `threads` must be a positive integer, got {threads!r}.")
        texts = {}
        for field in ("kernels", "source", "how", "model", "lce_version", "tensorflow_version",
                      "machine", "created"):  # fmt: skip
            value = data.get(field, "")
            if not isinstance(value, str):
                raise ValueError(f"{what}: `{field}` must be a string, got {value!r}.")
            texts[field] = value
        return cls(
            layers=layers,
            rest_ms=number(data.get("rest_ms"), "rest_ms"),
            threads=threads,
            input_shape=_shape(data.get("input_shape")),
            bnn_ms=number(data.get("bnn_ms"), "bnn_ms", optional=True),
            unpruned_ms=number(data.get("unpruned_ms"), "unpruned_ms", optional=True),
            **texts,
        )

    @classmethod
    def from_json(cls, text: str, what: str = "latency table") -> "LatencyTable":
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, TypeError) as err:
            raise ValueError(f"{what} is not valid JSON: {err}") from None
        return cls.from_dict(data, what)

    def save(self, path: str | os.PathLike) -> None:
        """Write the table as JSON, atomically (a failed write leaves `path` as it was)."""
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".latency_table.", dir=folder)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(self.to_json() + "\n")
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LatencyTable":
        """# Raises
            FileNotFoundError; ValueError: naming the file, if it is not a table.
        """
        path = os.fspath(path)
        with open(path, "rb") as f:
            raw = f.read(10_000_000)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"latency table {path!r} is not UTF-8 text.") from None
        return cls.from_json(text, f"latency table {path!r}")

    @classmethod
    def coerce(cls, value: Any, what: str = "latency_table") -> "LatencyTable":
        """A table from a `LatencyTable`, its dict, or a path to its JSON file.

        # Raises
            ValueError: naming `what`, for anything else, or a file that cannot be read
                or is not a table.
        """
        if isinstance(value, LatencyTable):
            return value
        if isinstance(value, dict):
            return cls.from_dict(value, f"`{what}`")
        if isinstance(value, (str, os.PathLike)):
            try:
                return cls.load(value)
            except OSError as err:
                raise ValueError(f"`{what}`: cannot read {os.fspath(value)!r}: {err.strerror or err}.") from None
        raise ValueError(
            f"`{what}` must be a pabt_tf LatencyTable, its dict or a JSON path, got {value!r}."
        )

    # -- inspection ------------------------------------------------------------------

    def format(self) -> str:
        lines = [
            f"LCE latency table of {self.model or 'a model'} at input {self.input_shape}: "
            f"{self.source}, {self.kernels}, {self.threads} thread(s)",
            f"  {self.how}",
            f"  {'layer':<28} {'bases':>5} {'fixed ms':>9} {'ms/conv':>8} {'ms/base':>8} "
            f"{'at 1':>8} {'at M·N':>8}",
        ]
        for row in self.layers:
            lines.append(
                f"  {row.name:<28} {row.weight_bases}x{row.activation_bases:<3} "
                f"{row.fixed_ms:>9.3f} {row.per_conv_ms:>8.3f} {row.per_base_ms:>8.3f} {row.ms(1):>8.3f} "
                f"{row.ms(row.num_binary_convs):>8.3f}"
            )
        low, high = self.range_ms()
        lines.append(f"  rest of the network {self.rest_ms:.3f} ms; predicted {low:.3f} ms "
                     f"(every layer at 1) .. {high:.3f} ms (unpruned)")  # fmt: skip
        measured = [f"{k} {v:.3f} ms" for k, v in (("BNN", self.bnn_ms), ("unpruned", self.unpruned_ms))
                    if v is not None]  # fmt: skip
        if measured:
            lines.append("  measured: " + ", ".join(measured))
        return "\n".join(lines)

    __str__ = format
