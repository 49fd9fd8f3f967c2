"""Verify a flatbuffer: LCE's Python interpreter against Keras on the same inputs.

A binary network is a discontinuous function: LCE computes the value each `sign` reads in
another order than Keras (batch norm folded into the `LceBconv2d` output transform, the
threshold folded into a bias), so a value within float32 rounding of its threshold can
binarize differently in the two. Such a *tie* changes one bit and may change the sample's
output far more than `atol`; it is not a different function. `verify` tells ties from real
differences with `sign_margins`: a differing sample counts as a tie only if one of the
values it binarizes lies within `tie_atol` of its threshold, and ties must stay rare.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import platform

import larq as lq
import numpy as np
import tensorflow as tf
from larq_compute_engine.tflite.python.interpreter import Interpreter

from pabt_tf.export.io_matching import fed as _fed
from pabt_tf.export.io_matching import match_io
from pabt_tf.export.io_matching import model_inputs as _model_inputs
from pabt_tf.flatbuffer_guard import check_flatbuffer, probe_in_subprocess

__all__ = [
    "verify",
    "VerificationResult",
    "sign_margins",
    "default_indirect_bgemm",
    "remember_converted",
]

# Larq input quantizers whose forward pass is sign(x) (threshold 0); `sign_margins` reads
# the distance of their input to 0.
_SIGN_QUANTIZERS = (lq.quantizers.SteSign, lq.quantizers.ApproxSign, lq.quantizers.SwishSign)

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


# The share of samples rounding ties may excuse (`verify`'s `max_tie_fraction`): outputs
# of one vector per sample, and outputs with a class vector per position.
DEFAULT_TIE_FRACTION = 0.02
DENSE_TIE_FRACTION = 0.5


@dataclasses.dataclass
class VerificationResult:
    """LCE interpreter vs Keras on the same inputs.

    # Attributes
        samples: number of inputs compared.
        max_abs_diff, mean_abs_diff: over all outputs.
        top1_agreement: fraction of argmaxes over the last (class) axis that agree: per
            sample for `(n, classes)` outputs, per pixel for segmentation's
            `(n, h, w, classes)`; with several outputs, the lowest over them (each is in
            `outputs`).
        atol, min_top1: the thresholds `ok` uses.
        interpreter: the interpreter options used.
        differing: samples with an output further than `atol` from Keras'.
        ties: those of them that binarize a value within `tie_atol` of its threshold in
            Keras (`sign_margins`), where float rounding decides the bit.
        tie_atol, max_tie_fraction: the tie thresholds `ok` uses.
        differing_margins: `sign_margins` of the differing samples (empty when none
            differ or the model has nothing to measure), smallest first.
        outputs: one dict per Keras output (in `model.outputs` order), compared with
            the flatbuffer output of its name: `name`, `shape` (of a sample),
            `max_abs_diff`, `mean_abs_diff`, `top1_agreement`, `differing`.
        matched_by: how the flatbuffer's inputs and outputs were matched to the model's
            (`pabt_tf.export.io_matching.match_io`): `"position"` for one input and one
            output, else `"signature"` (names), `"tensor names"` or `"shape"`.
    """

    samples: int
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    atol: float = 1e-3
    min_top1: float = 0.99
    interpreter: dict = dataclasses.field(default_factory=dict)
    differing: int = 0
    ties: int = 0
    tie_atol: float = 1e-5
    max_tie_fraction: float = 0.02
    differing_margins: list = dataclasses.field(default_factory=list)
    outputs: list = dataclasses.field(default_factory=list)
    matched_by: str = "position"

    @property
    def exact(self) -> bool:
        """Every output within `atol` of Keras'."""
        return self.max_abs_diff <= self.atol

    @property
    def ok(self) -> bool:
        """Every sample within `atol`, except rare ties, and top-1 agreement ≥ `min_top1`.

        A differing sample is a tie when *any* value it binarizes lies within `tie_atol`
        of its threshold; a large network has such a value on a fair share of its
        samples, so the bound on ties (`max_tie_fraction`) is what limits what they can
        excuse: a conversion error changes most samples, rounding a rare one."""
        if not self.top1_agreement >= self.min_top1:
            return False
        if self.exact:
            return True
        # Not exact (NaN included): only counted ties, and few of them, can excuse it.
        return 0 < self.differing == self.ties <= self.max_tie_fraction * self.samples

    def __str__(self) -> str:
        status = "PASSED" if self.ok else "FAILED"
        ties = ""
        if self.differing:
            ties = (f"; {self.differing} sample(s) beyond it, {self.ties} of them rounding "
                    f"ties (a binarized value within {self.tie_atol:g} of its threshold; "
                    f"≤ {100 * self.max_tie_fraction:g} % allowed)")
        text = (
            f"verification {status} on {self.samples} samples: max |diff| "
            f"{self.max_abs_diff:.3g} (≤ {self.atol:g}){ties}, mean |diff| "
            f"{self.mean_abs_diff:.3g}, top-1 agreement {100 * self.top1_agreement:.2f} % "
            f"(≥ {100 * self.min_top1:g} %)"
        )
        if len(self.outputs) > 1:
            text += f"; {len(self.outputs)} outputs (matched by {self.matched_by}):" + "".join(
                f"\n  output {o['name']!r} {tuple(o['shape'])}: max |diff| "
                f"{o['max_abs_diff']:.3g}, mean |diff| {o['mean_abs_diff']:.3g}, top-1 "
                f"agreement {100 * o['top1_agreement']:.2f} %, {o['differing']} sample(s) "
                "beyond atol"
                for o in self.outputs
            )
        return text

    def as_dict(self) -> dict:
        """The result as JSON-ready values, `ok` and `exact` included."""
        return {**dataclasses.asdict(self), "ok": self.ok, "exact": self.exact}


def _binarized_inputs(model: tf.keras.Model) -> list[tuple[tf.keras.layers.Layer, tf.Tensor]]:
    """The model's binarizing layers it can probe, with the tensor each one binarizes:
    PaBT layers and Larq layers with a sign input quantizer, and nested models (probed
    inside, see `_margins`), at the top level of `model`."""
    from pabt_tf.layers import PaBTLayer

    found = []
    for layer in model.layers:
        quantizer = getattr(layer, "input_quantizer", None)
        nested = isinstance(layer, tf.keras.Model)
        if not (nested or isinstance(layer, PaBTLayer) or isinstance(quantizer, _SIGN_QUANTIZERS)):
            continue
        # The node of `layer` in *this* model's graph: a layer may also be called in
        # other models, and a nested model's own construction is a node of it too.
        nodes = [
            node for i, node in enumerate(getattr(layer, "_inbound_nodes", []))
            if f"{layer.name}_ib-{i}" in getattr(model, "_network_nodes", ())
        ]
        if len(nodes) != 1:
            continue  # called twice in this model (shared) or not at all
        fed = nodes[0].input_tensors
        if not tf.is_tensor(fed):
            continue  # several inputs
        if nested and not getattr(layer, "inputs", None):
            continue  # a subclassed model: no graph to probe inside
        found.append((layer, fed))
    return found


def _margins(model: tf.keras.Model, inputs, batch_size: int) -> np.ndarray | None:
    """`sign_margins` of `model` on `inputs`; `None` if nothing in it binarizes. A nested
    model is probed on the values its input takes in the outer model: its layers' inputs
    are symbolic only in its own graph."""
    from pabt_tf.layers import PaBTLayer

    probed = _binarized_inputs(model)
    if not probed:
        return None
    values = tf.keras.Model(model.inputs, [tensor for _, tensor in probed]).predict(
        inputs, batch_size=batch_size, verbose=0
    )
    if len(probed) == 1:
        values = [values]
    samples = len(inputs[0]) if isinstance(inputs, list) else len(inputs)
    margins, found = np.full(samples, np.inf), False
    for (layer, _), x in zip(probed, values):
        x = np.asarray(x, np.float32)
        if isinstance(layer, tf.keras.Model):
            inner = _margins(layer, x, batch_size)
            if inner is not None:
                margins, found = np.minimum(margins, inner), True
            continue
        x = x.astype(np.float64)
        if isinstance(layer, PaBTLayer):
            thresholds = np.asarray(tf.keras.backend.get_value(layer.input_quantizer.thresholds))
            bases = np.flatnonzero(layer.binary_conv_mask.any(axis=0))
            distances = [np.abs(x - thresholds[n]) for n in bases]  # θ_n: () or (C,)
        else:
            distances = [np.abs(x)]
        for d in distances:
            margins = np.minimum(margins, d.reshape(len(x), -1).min(axis=1))
        found = True
    return margins if found else None


def sign_margins(model: tf.keras.Model, inputs: np.ndarray, batch_size: int = 64) -> np.ndarray:
    r"""Per sample: how close to its threshold is the closest value the model binarizes?

    For a PaBT layer with input $x$ and active activation bases $n$ (thresholds
    $\theta_n$), the margin is $\min |x - \theta_n|$; for a Larq layer with a sign
    input quantizer, $\min |x|$; the sample's margin is the smallest over all of them. A
    margin at float32 rounding distance (≈ 1e-6 for values of order 1) means two correct
    implementations of the network may binarize that value differently.

    # Arguments
        model: a Keras model with PaBT layers or Larq sign-quantized layers, at its top
            level or inside nested functional / Sequential models.
        inputs: samples with a leading batch axis; for a model with several inputs, a
            list of arrays in `model.inputs` order or a dict keyed by input name.
        batch_size: Keras batch size.

    # Returns
        Float array of shape `(samples,)`.

    # Raises
        ValueError: the model has no binarizing layer it can probe (none, or only inside
            subclassed models or shared layers), or `inputs` do not fit its inputs.
    """
    margins = _margins(model, _fed(_model_inputs(model, inputs)), batch_size)
    if margins is None:
        raise ValueError(
            "`model` has no PaBT layer or Larq sign-quantized layer it can probe (at its "
            "top level or in a nested functional model); sign_margins has nothing to measure."
        )
    return margins


def verify(
    model: tf.keras.Model,
    flatbuffer: bytes,
    inputs,
    *,
    atol: float = 1e-3,
    min_top1: float = 0.99,
    tie_atol: float = 1e-5,
    max_tie_fraction: float | None = None,
    num_threads: int = 1,
    use_indirect_bgemm: bool | None = None,
    batch_size: int = 64,
    probe: bool | None = None,
) -> VerificationResult:
    """Run `flatbuffer` with LCE's Python interpreter and `model` with Keras; compare.

    Inputs and outputs are matched by name, not position (`io_matching.match_io`: LCE's
    flatbuffer may order them differently from Keras, e.g. its outputs sorted by name),
    and each output is compared with its own (`result.outputs`); a sample differs when
    any of its outputs is further than `atol` from Keras'.

    # Arguments
        model: the Keras model (PaBT or stripped; both compute the same function).
        flatbuffer: the converted model.
        inputs: samples with a leading batch axis: a numpy array for a model with one
            input; for several, a list of arrays in `model.inputs` order or a dict keyed
            by `model.input_names`.
        atol, min_top1: thresholds of the result's `ok`.
        tie_atol, max_tie_fraction: a sample further than `atol` from Keras still passes
            if it binarizes a value within `tie_atol` of its threshold (`sign_margins`),
            as long as such ties are at most `max_tie_fraction` of the samples: a
            conversion error changes every sample, a rounding tie some. Default
            (`None`): `DEFAULT_TIE_FRACTION` (0.02) for outputs of one vector per sample,
            `DENSE_TIE_FRACTION` (0.5) when an output has a class vector per position
            (segmentation's `(n, h, w, classes)`): such a sample binarizes 10-100x more
            values than a classifier's, so a tie somewhere is common (measured: 9 of 40
            CamVid samples at 192×256, every one a tie, 99.79 % of pixels agreeing);
            the per-pixel agreement (`min_top1`) bounds what they change, and half the
            samples must still match exactly.
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
        ValueError: on empty inputs, inputs that do not fit the model's (number, names,
            samples) or whose shape does not match the flatbuffer, or a flatbuffer whose
            inputs and outputs cannot be matched to the model's (different numbers,
            names or shapes).
    """
    check_flatbuffer(flatbuffer, "`flatbuffer`")
    arrays = _model_inputs(model, inputs)
    samples = len(arrays[0])
    for name, value in (("atol", atol), ("tie_atol", tie_atol)):
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"`{name}` must be a finite number ≥ 0, got {value!r}.")
    for name, value in (("min_top1", min_top1), ("max_tie_fraction", max_tie_fraction)):
        if value is None and name == "max_tie_fraction":
            continue
        if not 0 <= value <= 1:
            raise ValueError(f"`{name}` must be in [0, 1], got {value!r}.")
    if probe not in (None, True, False):
        raise ValueError(f"`probe` must be None, True or False, got {probe!r}.")
    if use_indirect_bgemm is None:
        use_indirect_bgemm = default_indirect_bgemm()
    # The probe first: a file that crashes an interpreter is refused before this process
    # reads anything more of it.
    if probe or (probe is None and _digest(flatbuffer) not in _CONVERTED):
        settings = dict(num_threads=num_threads, use_indirect_bgemm=bool(use_indirect_bgemm))
        probe_in_subprocess(flatbuffer, "`flatbuffer`", [settings])
    match = match_io(model, flatbuffer)  # which flatbuffer input/output is which, by name
    interpreter = Interpreter(
        bytes(flatbuffer), num_threads=num_threads, use_indirect_bgemm=use_indirect_bgemm
    )
    fed = [None] * len(arrays)  # in the flatbuffer's order
    for k, (x, position) in enumerate(zip(arrays, match.inputs)):
        expected_shape = tuple(interpreter.input_shapes[position][1:])
        if tuple(x.shape[1:]) != expected_shape:
            which = "" if len(arrays) == 1 else f" for input {match.input_names[k]!r}"
            raise ValueError(
                f"`inputs`{which} have sample shape {tuple(x.shape[1:])}, the flatbuffer "
                f"expects {expected_shape}."
            )
        fed[position] = x
    lce_out = interpreter.predict(_fed(fed))
    lce_list = lce_out if isinstance(lce_out, list) else [lce_out]
    lce_list = [lce_list[position] for position in match.outputs]  # in Keras' order
    keras_list = tf.nest.flatten(model.predict(_fed(arrays), batch_size=batch_size, verbose=0))
    if len(keras_list) != len(lce_list):
        raise ValueError(
            f"the model returned {len(keras_list)} outputs, the flatbuffer {len(lce_list)}."
        )
    names = list(match.output_names) or [f"output_{k}" for k in range(len(keras_list))]
    diffs, outputs = [], []
    for name, a, b in zip(names, lce_list, keras_list):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a.shape != b.shape:
            raise ValueError(
                f"output {name!r}: the flatbuffer gives shape {a.shape}, Keras {b.shape}."
            )
        diff = np.abs(a - b).reshape(samples, -1)
        # The class axis is the last: one argmax per sample (classification) or per
        # pixel (segmentation's (n, h, w, classes) logits).
        a2, b2 = (a, b) if a.ndim > 2 else (a.reshape(samples, -1), b.reshape(samples, -1))
        agreement = float(np.mean(a2.argmax(-1) == b2.argmax(-1)))
        outputs.append(dict(
            name=str(name), shape=list(a.shape[1:]), max_abs_diff=float(diff.max()),
            mean_abs_diff=float(diff.mean()), top1_agreement=agreement,
            differing=int(np.sum(diff.max(axis=1) > atol)),
        ))  # fmt: skip
        diffs.append(diff)
    diff = np.concatenate(diffs, axis=1)
    differing = diff.max(axis=1) > atol
    if max_tie_fraction is None:
        dense = any(len(o["shape"]) > 1 for o in outputs)
        max_tie_fraction = DENSE_TIE_FRACTION if dense else DEFAULT_TIE_FRACTION
    margins = np.zeros(0)
    if differing.any():
        try:
            chosen = [x[differing] for x in arrays]
            margins = np.sort(sign_margins(model, _fed(chosen), batch_size=batch_size))
        except ValueError:  # nothing binarized that can be probed: no difference is a tie
            pass
    return VerificationResult(
        samples=int(samples),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        top1_agreement=min(o["top1_agreement"] for o in outputs),
        atol=float(atol),
        min_top1=float(min_top1),
        interpreter=dict(num_threads=num_threads, use_indirect_bgemm=bool(use_indirect_bgemm)),
        differing=int(differing.sum()),
        ties=int(np.sum(margins <= tie_atol)),
        tie_atol=float(tie_atol),
        max_tie_fraction=float(max_tie_fraction),
        differing_margins=[float(m) for m in margins],
        outputs=outputs,
        matched_by=match.by,
    )
