"""Convert a PaBT (or Larq) model to a checked LCE flatbuffer and report on it.

`convert_with_report` = `strip_pabt` → `larq_compute_engine.convert_keras_model` → parse
the flatbuffer's operators once → check every binary convolution became an `LceBconv2d`
→ optionally `verify`. LCE's own input checks (dtype policy, options) and warnings are
LCE's: its warnings are recorded in the report's notes, not silenced.
"""

from __future__ import annotations

import dataclasses
import warnings

import larq_compute_engine as lce
import numpy as np
import tensorflow as tf

from pabt_tf.costs import deploy_input_shape, mean_binary_convs, set_reference_input_shape
from pabt_tf.export.check import check_operators, unrunnable_operators
from pabt_tf.export.flatbuffer import count_operators, operator_list
from pabt_tf.export.precision import check_finite_weights, float32_model, float32_scope
from pabt_tf.export.strip import strip_pabt
from pabt_tf.export.verification import VerificationResult, remember_converted, verify
from pabt_tf.layers import pabt_layers

__all__ = ["convert", "convert_with_report", "ConversionReport", "ConversionError"]


class ConversionError(ValueError):
    """A conversion whose flatbuffer fails the checks; `.report` has the details."""

    def __init__(self, message: str, report: "ConversionReport"):
        super().__init__(message)
        self.report = report


def _weight_bytes(model: tf.keras.Model) -> int:
    return int(sum(np.asarray(w).nbytes for w in model.get_weights()))


def _convert_recording_warnings(
    stripped: tf.keras.Model, lce_options: dict
) -> tuple[bytes, list[str]]:
    """`lce.convert_keras_model`, with the warnings it raised as `"LCE: ..."` notes (each
    distinct message once) instead of on the console."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # record every one, even if shown before
        flatbuffer = lce.convert_keras_model(stripped, **lce_options)
    remember_converted(flatbuffer)  # made here: `verify` need not probe it in a child
    messages = dict.fromkeys(f"LCE: {w.category.__name__}: {w.message}" for w in caught)
    return flatbuffer, list(messages)


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
        expected_bconvs, found_bconvs: totals, in active binary convolutions (a fused
            `LceBconv2d` of `k · C_out` filters accounts for `k`).
        problems: why the flatbuffer fails the binary-op check (empty if it passes).
        notes: informative remarks (e.g. Larq QuantDense layers that stay float) and
            the warnings LCE's converter raised (`"LCE: ..."`).
        verification: a `VerificationResult`, if inputs were given.
        mean_binary_convs: MAC-weighted mean active binary convs per PaBT layer (None
            without PaBT layers).
        bconv_ops: `LceBconv2d` operators in the flatbuffer.
        fused: whether `strip_pabt` fused the weight bases of each activation base.
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
    bconv_ops: int = 0
    fused: bool = False

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
        lines.append(
            "Binary convolutions (expected -> found in LceBconv2d ops"
            + (", fused per activation base):" if self.fused else "):")
        )
        for check in self.binary_convs:
            mark = "ok" if check.ok else "MISSING"
            extra = f"  float: {', '.join(check.float_ops)}" if check.float_ops else ""
            if check.found_ops != check.found:  # fused: several convs per op
                extra = f" in {check.found_ops} op(s){extra}"
            lines.append(
                f"  {check.layer:<30} {check.expected:>3} -> {check.found:<3} {mark}{extra}"
            )
        total = f"  total {self.expected_bconvs} -> {self.found_bconvs}"
        if self.bconv_ops != self.found_bconvs:
            total += f" in {self.bconv_ops} LceBconv2d op(s)"
        lines.append(total)
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
    fused: bool = False,
    input_shape=None,
    **lce_options,
) -> ConversionReport:
    """`strip_pabt` + `larq_compute_engine.convert_keras_model` + checks.

    # Arguments
        model: a Keras model with PaBT layers (or a plain Larq model).
        inputs: optional samples; if given, `verify` runs and its result is in the report.
        strict: raise `ConversionError` when a binary convolution did not become an
            `LceBconv2d` or verification fails; `False` only warns.
        atol, min_top1: verification thresholds.
        fused: `strip_pabt`'s `fused` (`True`: the weight bases of each activation base
            fused; `False`, the default: one convolution per active binary convolution).
        input_shape: the input shape to deploy at, batch first (`(1, 360, 480, 3)`):
            required for a model built on `Input((None, None, C))` (`strip_pabt`'s
            `input_shape`); `inputs`, if given, must have that shape.
        **lce_options: passed to `convert_keras_model` (`target="arm"|"xcore"`,
            `inference_input_type`, ...).

    # Returns
        A `ConversionReport` (`report.flatbuffer` holds the bytes).

    # Raises
        ConversionError: with `strict=True`, on a failed check (the message names the
            layers and the reasons; `.report` holds the report).
        TypeError / ValueError: from `strip_pabt`, or LCE's own checks (e.g. a
            non-float32 model); a model of unknown input size without `input_shape`.
    """
    _check_static_size(model, input_shape)
    check_finite_weights(model)  # a NaN-ruined model: name the cause, not a symptom
    model = float32_model(model)  # LCE converts float32; mixed-precision weights are float32
    with float32_scope():  # layers strip creates must not pick up a global mixed policy
        stripped = strip_pabt(model, fused=fused, input_shape=input_shape)
        flatbuffer, lce_warnings = _convert_recording_warnings(stripped, lce_options)
    ops = operator_list(flatbuffer)  # parsed once: the check and the report share it
    checks, problems, notes = check_operators(stripped, ops)
    report = ConversionReport(
        flatbuffer=flatbuffer,
        operators=ops,
        op_counts=count_operators(ops),
        flatbuffer_bytes=len(flatbuffer),
        keras_weight_bytes=_weight_bytes(model),
        stripped_weight_bytes=_weight_bytes(stripped),
        binary_convs=checks,
        expected_bconvs=sum(c.expected for c in checks),
        found_bconvs=sum(c.found for c in checks),
        problems=problems,
        notes=notes + lce_warnings,
        mean_binary_convs=_mean_at(model, input_shape) if pabt_layers(model) else None,
        bconv_ops=sum(1 for op in ops if op.is_binary_conv),
        fused=fused,
    )
    if inputs is not None and not unrunnable_operators(ops):  # else LCE's interpreter refuses it
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


def _mean_at(model: tf.keras.Model, input_shape) -> float:
    """`mean_binary_convs` at the size converted at, for layers of unknown input size
    (their own reference shapes are left as they were)."""
    layers = [layer for layer in pabt_layers(model) if not layer.has_static_input_shape]
    if input_shape is None or not layers:
        return mean_binary_convs(model)
    saved = [getattr(layer, "_reference_input_shape", None) for layer in layers]
    try:
        set_reference_input_shape(model, input_shape)
        return mean_binary_convs(model)
    finally:
        for layer, shape in zip(layers, saved):
            layer._reference_input_shape = shape


def _check_static_size(model: tf.keras.Model, input_shape) -> None:
    """LCE converts a model of unknown spatial size without complaint into one that only
    accepts 1×1 inputs: refuse it here, naming the way out."""
    if input_shape is not None:
        deploy_input_shape(model, input_shape, "input_shape")  # raises on a bad one
        return
    for ref in getattr(model, "inputs", None) or []:
        dims = tf.TensorShape(ref.shape).as_list()
        if any(d is None for d in dims[1:]):
            example = (1, *[d or 224 for d in dims[1:]])
            raise ValueError(
                f"model {model.name!r} takes inputs of unknown size {tuple(dims)}: give the "
                f"input shape to deploy at, e.g. convert(model, input_shape={example}) "
                "(pabt-convert --input-shape "
                f"{','.join(str(d) for d in example)}); LCE would otherwise build a "
                "flatbuffer that only takes 1×1 inputs."
            )


def convert(
    model: tf.keras.Model,
    *,
    strict: bool = True,
    fused: bool = False,
    input_shape=None,
    **lce_options,
) -> bytes:
    """`strip_pabt` then LCE's `convert_keras_model`, checked: every binary convolution
    must come out as (part of) an `LceBconv2d` (one per active binary convolution, or
    with `fused=True` fused per activation base).

    # Arguments
        model: a Keras model with PaBT layers (Functional or Sequential).
        strict: raise on a binary convolution that came out float (default); `False`
            warns with the report instead.
        fused: `strip_pabt`'s `fused`.
        input_shape: the input shape to deploy at, batch first (`(1, 360, 480, 3)`),
            required for a model built on `Input((None, None, C))`.
        **lce_options: passed to `larq_compute_engine.convert_keras_model`.

    # Returns
        The flatbuffer (bytes). `convert_with_report` also returns the operator table,
        sizes and, given inputs, the verification.

    # Raises
        ConversionError: a binary convolution did not become an `LceBconv2d` (strict).
        ValueError: a model of unknown input size without `input_shape`.
    """
    return convert_with_report(
        model, strict=strict, fused=fused, input_shape=input_shape, **lce_options
    ).flatbuffer
