"""Verify a flatbuffer: LCE's Python interpreter against Keras on the same inputs."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import platform

import numpy as np
import tensorflow as tf
from larq_compute_engine.tflite.python.interpreter import Interpreter

from pabt_tf.flatbuffer_guard import check_flatbuffer, probe_in_subprocess

__all__ = ["verify", "VerificationResult", "default_indirect_bgemm", "remember_converted"]

# SHA-256 digests of the flatbuffers `convert` produced in this process (the newest ones):
# `verify` runs those in-process at once and probes any other in a child process first.
_CONVERTED: "collections.OrderedDict[bytes, None]" = collections.OrderedDict()
_CONVERTED_KEPT = 4096


def _digest(flatbuffer) -> bytes:
    return hashlib.sha256(flatbuffer).digest()


def remember_converted(flatbuffer: bytes) -> None:
    """Record that this process's LCE converter produced `flatbuffer` (`convert` calls
    it): `verify` need not probe those bytes in a child process."""
    digest = _digest(flatbuffer)
    _CONVERTED[digest] = None
    _CONVERTED.move_to_end(digest)
    while len(_CONVERTED) > _CONVERTED_KEPT:
        _CONVERTED.popitem(last=False)


def default_indirect_bgemm() -> bool:
    """Whether to run LCE's interpreter with `use_indirect_bgemm=True` on this machine:
    on x86, where LCE's default binary kernels are slow (DESIGN.md §1.4) and indirect
    BGEMM gives the same outputs."""
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
    probe: bool | None = None,
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
        probe: load the flatbuffer and run one inference in a child process before this
            process does (`pabt_tf.flatbuffer_guard.probe_in_subprocess`), so that a file
            that crashes LCE's interpreter in a way the checks cannot see raises instead of
            killing the caller. `None` (default): probe unless `convert` produced these
            bytes in this process; `True`: always; `False`: never (bytes you vouch for).
            A probe starts a Python process that loads only LCE's interpreter: about
            0.2-0.3 s on a small model (README).

    # Returns
        A `VerificationResult`.

    # Raises
        MalformedFlatbufferError: (a `ValueError`) `flatbuffer` is not a well-formed TFLite
            flatbuffer (truncated, corrupted), or the probe's interpreter crashed on it or
            refused it: checked before LCE's interpreter runs it in this process, which
            does not verify its input and would crash.
        ValueError: on empty inputs or inputs whose shape does not match the flatbuffer.
    """
    check_flatbuffer(flatbuffer, "`flatbuffer`")
    inputs = np.asarray(inputs, np.float32)
    if inputs.ndim < 1 or len(inputs) == 0:
        raise ValueError("`inputs` must hold at least one sample (leading batch axis).")
    if probe not in (None, True, False):
        raise ValueError(f"`probe` must be None, True or False, got {probe!r}.")
    if use_indirect_bgemm is None:
        use_indirect_bgemm = default_indirect_bgemm()
    if probe or (probe is None and _digest(flatbuffer) not in _CONVERTED):
        settings = dict(num_threads=num_threads, use_indirect_bgemm=bool(use_indirect_bgemm))
        probe_in_subprocess(flatbuffer, "`flatbuffer`", [settings])
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
