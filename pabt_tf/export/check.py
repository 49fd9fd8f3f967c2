"""Check a conversion: did every binary convolution of the stripped model become (part
of) an `LceBconv2d`?

LCE silently leaves a binary convolution as a float `CONV_2D` when its pattern is broken
(see `_FLOAT_REASON`); this module matches the stripped model's binary `QuantConv2D`
layers to the flatbuffer's operators and names the layers that came out float. Counts are
in *binary convolutions* (the `(m, n)` pairs of a PaBT layer), whatever the grouping: a
fused `QuantConv2D` of `k · C_out` filters (`strip_pabt(fused=True)`, named
`"<layer>/m0_2n1_bconv"`, see `bconv_count`) is `k` of them, found only if its single
`LceBconv2d` of `k · C_out` output channels is.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Sequence

import larq as lq
import tensorflow as tf

from pabt_tf.binary_layers import is_binary_layer, is_binary_quant_conv2d, is_binary_quant_dense
from pabt_tf.export.flatbuffer import OperatorInfo, operator_list
from pabt_tf.export.strip import bconv_count, bconv_owner
from pabt_tf.graph import all_layers

__all__ = [
    "BinaryConvCheck",
    "check_binary_convs",
    "check_operators",
    "unrunnable_operators",
    "LCE_CUSTOM_OPS",
]

# The custom operators LCE's runtime registers (its interpreter and its builds for Arm);
# any other custom op in a flatbuffer has no kernel there.
LCE_CUSTOM_OPS = frozenset({"LceQuantize", "LceDequantize", "LceBconv2d", "LceBMaxPool2d"})


def unrunnable_operators(ops: Sequence[OperatorInfo]) -> list[OperatorInfo]:
    """The custom operators that neither TFLite's builtin kernels nor LCE's runtime
    provide (`LCE_CUSTOM_OPS`): a flatbuffer holding one cannot run with LCE."""
    return [op for op in ops if op.custom and op.name not in LCE_CUSTOM_OPS]


@dataclasses.dataclass
class BinaryConvCheck:
    """Binary convolutions of one owner (a PaBT layer, or a Larq `QuantConv2D`).

    # Attributes
        layer: the PaBT layer's name (or the Larq layer's).
        expected: its binary convolutions in the stripped model (a fused `QuantConv2D`
            of `k · C_out` filters counts `k`).
        found: how many of them the `LceBconv2d` ops matched to it compute.
        float_ops: float ops of the same shape that took the missing binary ones' place.
        signature: `(out_channels, kh, kw, in_channels, strides, dilations)` of its first
            binary `QuantConv2D`.
        expected_ops: its binary `QuantConv2D` layers (one `LceBconv2d` each).
        found_ops: `LceBconv2d` ops matched to it.
    """

    layer: str
    expected: int
    found: int = 0
    float_ops: list = dataclasses.field(default_factory=list)
    signature: tuple = ()
    expected_ops: int = 0
    found_ops: int = 0

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

    `check_operators` on the flatbuffer's `operator_list`.

    # Returns
        `(checks, problems, notes)`, as `check_operators`.

    # Raises
        TypeError / ValueError: if `flatbuffer` is not a TFLite flatbuffer.
    """
    return check_operators(stripped, operator_list(flatbuffer))


def check_operators(
    stripped: tf.keras.Model, ops: Sequence[OperatorInfo]
) -> tuple[list[BinaryConvCheck], list[str], list[str]]:
    """Match the binary `QuantConv2D` layers of a (stripped) model to parsed operators.

    Every binary `QuantConv2D` is identified by its signature
    `(out_channels, kh, kw, in_channels, strides, dilations)`; within a signature the
    `LceBconv2d` ops are shared out over the layers in model order, so a shortfall is
    attributed to the last layers of that shape. A layer found accounts for the binary
    convolutions it computes (`bconv_count`: `k` for a fused one of `k · C_out` filters,
    whose signature carries those `k · C_out` channels). Float `CONV_2D`/`FULLY_CONNECTED`
    ops of a short signature are reported as the binary convolutions' float replacements.

    # Arguments
        stripped: the model that was converted (no PaBT layers; see `strip_pabt`).
        ops: the flatbuffer's operators (`operator_list`).

    # Returns
        `(checks, problems, notes)`: one `BinaryConvCheck` per owner, problem messages
        (empty when every binary convolution became an `LceBconv2d` and every custom
        operator is one of LCE's, `LCE_CUSTOM_OPS`), informative notes.
    """
    checks: dict[str, BinaryConvCheck] = {}
    per_signature: dict[tuple, list[tuple[str, int]]] = {}  # [(owner, convs)] per layer
    notes: list[str] = []
    for layer in all_layers(stripped):
        if is_binary_quant_dense(layer):
            notes.append(
                f"Larq QuantDense {layer.name!r} runs as a float FULLY_CONNECTED (LCE has "
                "no binary dense op; PaBTDense exports as a 1x1 binary convolution instead)."
            )
        if isinstance(layer, lq.layers.QuantConv2D) and not is_binary_layer(layer) and (
            layer.input_quantizer is not None or layer.kernel_quantizer is not None
        ):
            notes.append(
                f"Larq QuantConv2D {layer.name!r} runs as a float CONV_2D: it is not binary "
                "on both sides (LceBconv2d needs 1-bit input and kernel quantizers)."
            )
        if not is_binary_quant_conv2d(layer):
            continue
        owner = bconv_owner(layer.name)
        kh, kw, c, o = (int(d) for d in layer.kernel.shape)
        sig = (o, kh, kw, c, tuple(int(s) for s in layer.strides), tuple(int(d) for d in layer.dilation_rate))
        check = checks.setdefault(owner, BinaryConvCheck(owner, 0, signature=sig))
        convs = bconv_count(layer.name)
        check.expected += convs
        check.expected_ops += 1
        per_signature.setdefault(sig, []).append((owner, convs))

    bconv_by_sig = Counter(op.conv_signature for op in ops if op.is_binary_conv)
    # Float stand-ins are matched on (out, kh, kw, in) only: a dilated conv that LCE
    # leaves float shows up with dilation 1 between SpaceToBatchND/BatchToSpaceND.
    float_by_shape: dict[tuple, list[OperatorInfo]] = {}
    for op in ops:
        if op.name in ("CONV_2D", "FULLY_CONNECTED"):
            float_by_shape.setdefault(op.conv_signature[:4], []).append(op)

    problems: list[str] = []
    for sig, entries in per_signature.items():
        available = bconv_by_sig.pop(sig, 0)
        for owner, convs in entries:  # one entry per binary QuantConv2D, in model order
            check = checks[owner]
            if available > 0:
                check.found += convs
                check.found_ops += 1
                available -= 1
                continue
            # Missing: the float ops of this shape are its candidate stand-ins (an owner
            # with fused convolutions of several widths may be short in several shapes).
            for op in float_by_shape.get(sig[:4], []):
                if f"{op.name}#{op.index}" not in check.float_ops:
                    check.float_ops.append(f"{op.name}#{op.index}")
        if available:
            problems.append(f"{available} extra LceBconv2d op(s) of shape {sig} match no binary layer.")
    for op in unrunnable_operators(ops):
        problems.append(
            f"operator {op.name} (#{op.index}) is a custom op that neither TFLite's "
            "builtin kernels nor LCE's runtime provide (a TensorFlow op with no TFLite "
            "kernel, e.g. in a Lambda layer): the flatbuffer cannot run with LCE."
        )
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
