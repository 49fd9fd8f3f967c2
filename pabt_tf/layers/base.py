"""`PaBTLayer`: the multi-base binary layer's arguments, weights and forward pass.

A PaBT layer with `M` weight bases and `N` activation bases computes (DESIGN.md §1.1)

\\[
y = \\sum_{m<M} \\sum_{n<N} \\text{mask}_{mn}\\, \\text{gate}_{mn}\\,
    \\alpha_m \\odot \\operatorname{conv}(H_n(x), B_m)
\\]

Every (m, n) pair is one *binary convolution*. The layer never runs `M·N` convolutions:
convolution is linear in its kernel, so the active weight bases of each activation base
are folded into one kernel `K_n = Σ_m c_mn α_m B_m`, and each *active* activation base
runs one convolution (inside a `tf.cond`, so a fully pruned activation base is not
computed, forward or backward, and the graph never retraces when the mask changes).
Gate gradients stay exact (they are linear functionals of the folded kernels'
gradients), and a pruned binary convolution costs nothing but its share of the
kernel-sized fold.

Mixed precision: like Keras layers, the weights are float32 and the inputs are cast to
the layer's compute dtype (`dtype="mixed_float16"` or a global policy); the kernel-sized
fold runs in float32 (exact ±1 bases, gate and scale products), and only the folded
kernels, the thresholds and the bias are cast to the compute dtype. The subclasses
(`pabt_tf.layers.conv`, `pabt_tf.layers.dense`) define the binary op; the pruning state
is `pabt_tf.layers.state`.
"""

from __future__ import annotations

from typing import Any

import larq as lq
import numpy as np
import tensorflow as tf
from tf_keras.src import backend as _keras_backend  # unique layer names

from pabt_tf._validation import check_int
from pabt_tf.layers.reference_shape import ReferenceShape
from pabt_tf.layers.state import PruningState, is_active
from pabt_tf.quantizers import ABCWeightBases, MultiBaseSign, RandomSign, get_binary_quantizer

__all__ = ["PaBTLayer"]

_BASES = ("independent", "abc")


class PaBTLayer(PruningState, ReferenceShape, tf.keras.layers.Layer):
    """Base class of multi-base binary layers: arguments, weights, folding, forward.

    Subclasses define the kernel shape of one binary convolution and the binary op.

    # Arguments
        weight_bases: `M`, number of binary weight bases (positive integer).
        activation_bases: `N`, number of binary activation bases (positive integer).
        bases: `"independent"` (default): `M` independent binary kernels;
            `"abc"`: ABC-Net bases from one latent kernel (needs `latent_weights=True`).
        latent_weights: `True`: real latent kernels binarized by `kernel_quantizer`
            (straight-through); `False`: the kernels are stored as ±1 with Larq
            `precision = 1` and are meant to be trained by `larq.optimizers.Bop`.
        kernel_quantizer: 1-bit Larq quantizer for latent independent kernels.
        activation_quantizer: 1-bit Larq quantizer giving the activation bases'
            pseudo-gradient (`"ste_sign"` default).
        per_channel_thresholds: one threshold per activation base and input channel.
        threshold_spread: initial thresholds are spread over `[-δ, +δ]`.
        kernel_initializer, kernel_constraint: for latent kernels (defaults
            `glorot_uniform` and Larq's `weight_clip` for independent bases).
        scale_initializer, scale_constraint: α, per weight base and output channel.
        gate_initializer: the gate of every binary convolution (default ones).
        use_bias, bias_initializer: optional real bias.
        activation: optional activation applied to the output.
        dtype: as for Keras layers, a dtype or a mixed-precision policy
            (`"mixed_float16"`): weights in its variable dtype, computation in its
            compute dtype.

    # Raises
        ValueError: on any invalid argument, naming it.
    """

    def __init__(
        self,
        units: int,
        weight_bases: int = 3,
        activation_bases: int = 3,
        bases: str = "independent",
        latent_weights: bool = True,
        kernel_quantizer: Any = "ste_sign",
        activation_quantizer: Any = "ste_sign",
        per_channel_thresholds: bool = False,
        threshold_spread: float = 0.5,
        kernel_initializer: Any = "glorot_uniform",
        kernel_constraint: Any = "default",
        scale_initializer: Any = "ones",
        scale_constraint: Any = "non_neg",
        gate_initializer: Any = "ones",
        use_bias: bool = False,
        bias_initializer: Any = "zeros",
        activation: Any = None,
        **kwargs,
    ):
        self.weight_bases = check_int("weight_bases", weight_bases)
        self.activation_bases = check_int("activation_bases", activation_bases)
        if bases not in _BASES:
            raise ValueError(f"`bases` must be one of {_BASES}, got {bases!r}.")
        if not isinstance(latent_weights, bool):
            raise ValueError(f"`latent_weights` must be a bool, got {latent_weights!r}.")
        if bases == "abc" and not latent_weights:
            raise ValueError(
                "`bases='abc'` builds its bases from one real latent kernel and needs "
                "`latent_weights=True`."
            )
        self.bases = bases
        self.latent_weights = latent_weights
        self._units = units
        if kernel_constraint == "default":
            kernel_constraint = (
                "weight_clip" if (bases == "independent" and latent_weights) else None
            )
        if not latent_weights and kernel_constraint is not None:
            raise ValueError(
                "`kernel_constraint` must be None with `latent_weights=False`: the "
                "kernels are ±1 and only flipped by Bop."
            )
        self.kernel_quantizer = (
            get_binary_quantizer(kernel_quantizer, "kernel_quantizer")
            if (bases == "independent" and latent_weights)
            else lq.quantizers.NoOp(precision=1)
            if bases == "independent"
            # float32: the statistics of the latent kernel, not of its float16 copy
            else ABCWeightBases(self.weight_bases, dtype="float32")
        )
        self.input_quantizer = MultiBaseSign(
            self.activation_bases,
            per_channel=per_channel_thresholds,
            threshold_spread=threshold_spread,
            pseudo_gradient=get_binary_quantizer(activation_quantizer, "activation_quantizer"),
            dtype=kwargs.get("dtype"),  # the layer's policy
        )
        if not latent_weights and kernel_initializer == "glorot_uniform":
            kernel_initializer = RandomSign()  # ±1 kernels are stored as ±1
        # The scope lets legacy (HDF5) configs, which name it "RandomSign" without the
        # "pabt_tf>" package prefix, deserialize too.
        with tf.keras.utils.custom_object_scope({"RandomSign": RandomSign}):
            self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)
        self.kernel_constraint = tf.keras.constraints.get(kernel_constraint)
        self.scale_initializer = tf.keras.initializers.get(scale_initializer)
        self.scale_constraint = tf.keras.constraints.get(scale_constraint)
        self.gate_initializer = tf.keras.initializers.get(gate_initializer)
        self.use_bias = bool(use_bias)
        self.bias_initializer = tf.keras.initializers.get(bias_initializer)
        self.activation = tf.keras.activations.get(activation)
        super().__init__(**kwargs)

    # -- construction -----------------------------------------------------------------

    def _init_set_name(self, name, zero_based=True):
        # "pabt_conv2d", not Keras' snake case of the class name ("pa_bt_conv2d").
        if name is None:
            snake = "pabt_" + type(self).__name__[len("PaBT"):].lower()
            name = _keras_backend.unique_object_name(snake, zero_based=zero_based)
        super()._init_set_name(name, zero_based=zero_based)

    def _base_initializer(self, m: int):
        """A fresh initializer per base: one unseeded instance called M times would
        give M identical kernels; a seeded one gets seed + m."""
        config = self.kernel_initializer.get_config()
        if config.get("seed") is not None:
            config["seed"] = int(config["seed"]) + m
        return type(self.kernel_initializer).from_config(config)

    def _kernel_shape(self, in_channels: int) -> tuple[int, ...]:
        raise NotImplementedError

    def _get_quantizer(self, name: str):
        if self.bases == "independent" and name.startswith("kernel_"):
            return self.kernel_quantizer
        return None

    def _add_variable_with_custom_getter(self, name: str, **kwargs):
        # Like Larq's `BaseLayer`, but for several kernels: wrapping each base in a
        # `QuantizedVariable` quantizes it and tags it with `precision = 1`, which is
        # what `Bop.is_binary_variable` and `lq.models.summary` look at.
        quantizer = self._get_quantizer(name)
        if quantizer is None:
            return super()._add_variable_with_custom_getter(name, **kwargs)
        old_getter = kwargs.pop("getter")

        def getter(*args, **kw):
            return lq.quantized_variable.QuantizedVariable.from_variable(
                old_getter(*args, **kw), quantizer
            )

        return super()._add_variable_with_custom_getter(name, getter=getter, **kwargs)

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        in_channels = input_shape[-1]
        if in_channels is None:
            raise ValueError(f"{self.name}: the input's channel dimension must be known.")
        in_channels = int(in_channels)
        M, N = self.weight_bases, self.activation_bases
        kshape = self._kernel_shape(in_channels)
        if self.bases == "independent":
            self.kernels = [
                self.add_weight(
                    f"kernel_{m}",
                    shape=kshape,
                    initializer=self._base_initializer(m),
                    constraint=self.kernel_constraint,
                    trainable=True,
                    autocast=False,
                )
                for m in range(M)
            ]
        else:
            self.kernel = self.add_weight(
                "kernel",
                shape=kshape,
                initializer=self.kernel_initializer,
                constraint=self.kernel_constraint,
                trainable=True,
                autocast=False,
            )
        self.scale = self.add_weight(
            "scale",
            shape=(M, self._units),
            initializer=self.scale_initializer,
            constraint=self.scale_constraint,
            trainable=True,
            autocast=False,
        )
        self.gate = self.add_weight(
            "gate", shape=(M, N), initializer=self.gate_initializer, trainable=True, autocast=False
        )
        if self.use_bias:
            self.bias = self.add_weight(
                "bias", shape=(self._units,), initializer=self.bias_initializer, autocast=False
            )
        self._add_pruning_state()
        self.input_quantizer.build(input_shape)
        self._built_input_shape = input_shape
        super().build(input_shape)

    # -- forward ----------------------------------------------------------------------

    def binary_kernels(self) -> tf.Tensor:
        """The `M` binary weight bases `B_m`, stacked: shape `(M, *kernel_shape)`, in the
        variable dtype (float32)."""
        if self.bases == "abc":
            bases = self.kernel_quantizer(tf.convert_to_tensor(self.kernel))
        else:
            with lq.context.quantized_scope(True):
                bases = tf.stack([tf.convert_to_tensor(k) for k in self.kernels])
        # A quantizer computes in its own dtype policy (float16 under a global mixed one).
        return tf.cast(bases, self.dtype)

    def coefficients(self) -> tf.Tensor:
        """`mask · gate_decay · gate`, shape `(M, N)`: each binary convolution's weight."""
        return self.mask * self.gate_decay * self.gate

    def _fold(self) -> tf.Tensor:
        """Folded kernels `K_n = Σ_m c_mn α_m B_m`, shape `(N, *kernel_shape)`, float32.

        Weight bases without an active binary convolution are dropped with a select,
        not multiplied by 0, so nothing of their kernels or scales (not even a NaN)
        reaches the output.
        The work is kernel-sized, negligible next to the convolution.
        """
        bases = self.binary_kernels()
        M = self.weight_bases
        kshape = bases.shape[1:]
        alpha = tf.reshape(self.scale, [M] + [1] * (len(kshape) - 1) + [self._units])
        flat = tf.reshape(bases * alpha, [M, -1])
        used = tf.reduce_any(is_active(self.mask), axis=1, keepdims=True)  # (M, 1)
        flat = tf.where(used, flat, tf.zeros_like(flat))
        folded = tf.matmul(self.coefficients(), flat, transpose_a=True)  # (N, P)
        return tf.reshape(folded, tf.concat([[-1], kshape], 0))

    def _base_op(self, h: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        """One activation base through its folded kernel (no +1 padding correction)."""
        raise NotImplementedError

    def _padding_correction(self, inputs: tf.Tensor, folded: tf.Tensor) -> tf.Tensor | None:
        """What the +1 padding adds to the output (in `folded`'s dtype), or None."""
        return None

    # Up to this many activation bases, every non-empty set of active bases gets its
    # own branch (2^N − 1 of them, the graph grows with that); beyond, a chain of conds.
    _MAX_PATTERN_BASES = 3

    def _sum_active(self, branch, base_active: tf.Tensor) -> tf.Tensor:
        """Σ over the active activation bases n of `branch(n)`, computing only those."""
        N = self.activation_bases
        if N == 1:
            return branch(0)
        # XLA (TF 2.19) crashes compiling the gradient of a `tf.switch_case` whose
        # branches have a dynamic batch size: under XLA, conds only.
        xla = tf.__internal__.get_enclosing_xla_context() is not None
        if N <= self._MAX_PATTERN_BASES and not xla:
            # Branch p sums the bases in the bits of p + 1, independently (in parallel).
            bits = tf.cast(base_active, tf.int32) * (2 ** tf.range(N))
            pattern = tf.reduce_sum(bits) - 1

            def make(p):
                members = [n for n in range(N) if (p + 1) >> n & 1]
                return lambda: tf.add_n([branch(n) for n in members])

            return tf.switch_case(pattern, [make(p) for p in range(2**N - 1)])
        # Start at the first active base (no zeros to add), then add the rest.
        first = tf.argmax(tf.cast(base_active, tf.int32), output_type=tf.int32)
        if xla:

            def from_base(n):
                if n == N - 1:
                    return branch(n)
                return tf.cond(first == n, lambda: branch(n), lambda: from_base(n + 1))

            y = from_base(0)
        else:
            y = tf.switch_case(first, [lambda n=n: branch(n) for n in range(N)])
        for n in range(1, N):
            y = tf.cond(
                base_active[n] & (first < n), lambda n=n, y=y: y + branch(n), lambda y=y: y
            )
        return y

    def call(self, inputs):
        self._remember_input_shape(inputs.shape)
        inputs = tf.cast(inputs, self.compute_dtype)
        folded = self._fold()
        N = self.activation_bases
        # Read and split outside the branches: the branches stay stateless, and the
        # backward pass packs N small gradients instead of scattering each into zeros.
        kernels = tf.unstack(tf.cast(folded, inputs.dtype), num=N)
        thresholds = tf.unstack(tf.convert_to_tensor(self.input_quantizer.thresholds), num=N)

        def branch(n):
            h = self.input_quantizer.shifted_sign(inputs, thresholds[n])
            return self._base_op(h, kernels[n])

        # One convolution per *active* activation base, each over C channels, summed.
        # `tf.switch_case`/`tf.cond` run only the taken branch (forward and backward),
        # so a pruned activation base costs nothing while the graph stays static (no
        # retracing on pruning, no dynamic channel counts, no gathers). Measured on
        # this project's 2-core CPU, separate C-channel convolutions beat one over
        # N·C concatenated channels (oneDNN slows down more than linearly in the
        # channel count); independent ones summed at the end can overlap, unlike a
        # chain of accumulations.
        base_active = tf.reduce_any(is_active(self.mask), axis=0)
        y = self._sum_active(branch, base_active)
        extra = self._padding_correction(inputs, folded)
        if self.use_bias:
            extra = self.bias if extra is None else extra + self.bias
        if extra is not None:
            y = y + tf.cast(extra, y.dtype)
        if self.activation is not None:
            y = self.activation(y)
        return y

    # -- cost -------------------------------------------------------------------------

    def binary_conv_macs(self) -> int:
        """MACs of *one* binary convolution (per example), at `reference_input_shape`."""
        self._check_built("binary_conv_macs")
        return int(np.prod(self._kernel_shape(int(self._input_shape_for_macs[-1])))) * int(
            self._output_pixels()
        )

    def binary_macs(self) -> int:
        """1-bit MACs per example of the active binary convolutions."""
        return self.active_binary_convs * self.binary_conv_macs()

    def _output_pixels(self) -> int:
        raise NotImplementedError

    # -- serialization ----------------------------------------------------------------

    def get_config(self) -> dict:
        config = {
            "weight_bases": self.weight_bases,
            "activation_bases": self.activation_bases,
            "bases": self.bases,
            "latent_weights": self.latent_weights,
            "activation_quantizer": lq.quantizers.serialize(
                self.input_quantizer.pseudo_gradient
            ),
            "per_channel_thresholds": self.input_quantizer.per_channel,
            "threshold_spread": self.input_quantizer.threshold_spread,
            "kernel_initializer": tf.keras.initializers.serialize(self.kernel_initializer),
            "kernel_constraint": tf.keras.constraints.serialize(self.kernel_constraint)
            if self.kernel_constraint is not None
            else None,
            "scale_initializer": tf.keras.initializers.serialize(self.scale_initializer),
            "scale_constraint": tf.keras.constraints.serialize(self.scale_constraint)
            if self.scale_constraint is not None
            else None,
            "gate_initializer": tf.keras.initializers.serialize(self.gate_initializer),
            "use_bias": self.use_bias,
            "bias_initializer": tf.keras.initializers.serialize(self.bias_initializer),
            "activation": tf.keras.activations.serialize(self.activation)
            if self.activation is not None
            else None,
        }
        if self.bases == "independent" and self.latent_weights:
            config["kernel_quantizer"] = lq.quantizers.serialize(self.kernel_quantizer)
        return {**super().get_config(), **config}


