"""Multi-base binary layers: `PaBTConv2D` and `PaBTDense`.

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
"""

from __future__ import annotations

from typing import Any, Sequence

import larq as lq
import numpy as np
import tensorflow as tf
from tf_keras.src import backend as _keras_backend  # unique layer names

from pabt_tf.quantizers import (
    ABCWeightBases,
    MultiBaseSign,
    RandomSign,
    _check_positive_int,
    get_binary_quantizer,
)

__all__ = ["PaBTConv2D", "PaBTDense", "PaBTLayer", "pabt_layers"]

_BASES = ("independent", "abc")


def _normalize_tuple(name: str, value: Any, rank: int) -> tuple[int, ...]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value),) * rank
    try:
        value = tuple(value)
    except TypeError:
        value = ()
    if len(value) != rank or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1
        for v in value
    ):
        raise ValueError(
            f"`{name}` must be a positive integer or a tuple of {rank} positive "
            f"integers, got {value!r}."
        )
    return tuple(int(v) for v in value)


def _same_padding(size, stride: int, dilation: int, kernel: int):
    """TF's 'same' padding (before, after) for one spatial dimension."""
    effective = (kernel - 1) * dilation + 1
    out = (size + stride - 1) // stride
    total = (out - 1) * stride + effective - size
    total = tf.maximum(total, 0) if tf.is_tensor(total) else max(total, 0)
    return [total // 2, total - total // 2]


class PaBTLayer(tf.keras.layers.Layer):
    """Base class of multi-base binary layers (shared state, folding and pruning).

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

    # Raises
        ValueError: on any invalid argument, naming it.
    """

    _rank: int = 0  # spatial rank of the binary op (2 for conv, 0 for dense)

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
        self.weight_bases = _check_positive_int("weight_bases", weight_bases)
        self.activation_bases = _check_positive_int("activation_bases", activation_bases)
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
            else ABCWeightBases(self.weight_bases)
        )
        self.input_quantizer = MultiBaseSign(
            self.activation_bases,
            per_channel=per_channel_thresholds,
            threshold_spread=threshold_spread,
            pseudo_gradient=get_binary_quantizer(activation_quantizer, "activation_quantizer"),
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
            )
        self.scale = self.add_weight(
            "scale",
            shape=(M, self._units),
            initializer=self.scale_initializer,
            constraint=self.scale_constraint,
            trainable=True,
        )
        self.gate = self.add_weight(
            "gate", shape=(M, N), initializer=self.gate_initializer, trainable=True
        )
        if self.use_bias:
            self.bias = self.add_weight(
                "bias", shape=(self._units,), initializer=self.bias_initializer
            )
        # Pruning state: non-trainable weights, so checkpoints, `model.save` and
        # `tf.distribute` carry them. ONLY_FIRST_REPLICA lets a replica context write
        # values that are identical on every replica (cross-replica gradients).
        state = dict(
            trainable=False,
            synchronization=tf.VariableSynchronization.ON_WRITE,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )
        self.mask = self.add_weight("mask", shape=(M, N), initializer="ones", **state)
        self.importance_variable = self.add_weight(
            "importance", shape=(M, N), initializer="zeros", **state
        )
        self.gate_decay = self.add_weight(
            "gate_decay", shape=(M, N), initializer="ones", **state
        )
        self.pruning_step = self.add_weight(
            "pruning_step", shape=(), dtype=tf.int64, initializer="zeros", **state
        )
        self.input_quantizer.build(input_shape)
        self._input_shape_for_macs = input_shape
        super().build(input_shape)

    # -- forward ----------------------------------------------------------------------

    def binary_kernels(self) -> tf.Tensor:
        """The `M` binary weight bases `B_m`, stacked: shape `(M, *kernel_shape)`."""
        if self.bases == "abc":
            return self.kernel_quantizer(tf.convert_to_tensor(self.kernel))
        with lq.context.quantized_scope(True):
            return tf.stack([tf.convert_to_tensor(k) for k in self.kernels])

    def coefficients(self) -> tf.Tensor:
        """`mask · gate_decay · gate`, shape `(M, N)`: each binary convolution's weight."""
        return self.mask * self.gate_decay * self.gate

    def _fold(self, active: tf.Tensor | None = None) -> tf.Tensor:
        """Folded kernels `K_n = Σ_m c_mn α_m B_m`, shape `(N, *kernel_shape)`.

        With `active` (int indices), only those activation bases: `(Na, *kernel_shape)`.
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
        used = tf.reduce_any(self.mask > 0.5, axis=1, keepdims=True)  # (M, 1)
        flat = tf.where(used, flat, tf.zeros_like(flat))
        coef = self.coefficients()
        if active is not None:
            coef = tf.gather(coef, active, axis=1)  # (M, Na)
        folded = tf.matmul(coef, flat, transpose_a=True)  # (N or Na, P)
        return tf.reshape(folded, tf.concat([[-1], kshape], 0))

    def _active_activation_bases(self) -> tf.Tensor:
        """Int indices of the activation bases with at least one active convolution."""
        return tf.reshape(tf.where(tf.reduce_any(self.mask > 0.5, axis=0)), [-1])

    def _base_op(self, h: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        """One activation base through its folded kernel (no +1 padding correction)."""
        raise NotImplementedError

    def _padding_correction(self, inputs: tf.Tensor, folded: tf.Tensor) -> tf.Tensor | None:
        """What the +1 padding adds to the output, or None."""
        return None

    # Up to this many activation bases, every non-empty set of active bases gets its
    # own branch (2^N − 1 of them, the graph grows with that); beyond, a chain of conds.
    _MAX_PATTERN_BASES = 3

    def _sum_active(self, branch, base_active: tf.Tensor) -> tf.Tensor:
        """Σ over the active activation bases n of `branch(n)`, computing only those."""
        N = self.activation_bases
        if N == 1:
            return branch(0)
        if N <= self._MAX_PATTERN_BASES:
            # Branch p sums the bases in the bits of p + 1, independently (in parallel).
            bits = tf.cast(base_active, tf.int32) * (2 ** tf.range(N))
            pattern = tf.reduce_sum(bits) - 1

            def make(p):
                members = [n for n in range(N) if (p + 1) >> n & 1]
                return lambda: tf.add_n([branch(n) for n in members])

            return tf.switch_case(pattern, [make(p) for p in range(2**N - 1)])
        # Many bases: start at the first active one (no zeros to add), then add the rest.
        first = tf.argmax(tf.cast(base_active, tf.int32), output_type=tf.int32)
        y = tf.switch_case(first, [lambda n=n: branch(n) for n in range(N)])
        for n in range(1, N):
            y = tf.cond(
                base_active[n] & (first < n), lambda n=n, y=y: y + branch(n), lambda y=y: y
            )
        return y

    def call(self, inputs):
        inputs = tf.convert_to_tensor(inputs)
        folded = self._fold()
        N = self.activation_bases
        # Read and split outside the branches: the branches stay stateless, and the
        # backward pass packs N small gradients instead of scattering each into zeros.
        kernels = tf.unstack(folded, num=N)
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
        base_active = tf.reduce_any(self.mask > 0.5, axis=0)
        y = self._sum_active(branch, base_active)
        extra = self._padding_correction(inputs, folded)
        if self.use_bias:
            extra = self.bias if extra is None else extra + self.bias
        if extra is not None:
            y = y + extra
        if self.activation is not None:
            y = self.activation(y)
        return y

    # -- pruning state ----------------------------------------------------------------

    def _check_built(self, what: str):
        if not self.built:
            raise ValueError(f"{self.name}: build the layer before reading `{what}`.")

    @property
    def binary_conv_mask(self) -> np.ndarray:
        """Bool `(M, N)`: which binary convolutions are active."""
        self._check_built("binary_conv_mask")
        return np.asarray(tf.keras.backend.get_value(self.mask)) > 0.5

    @property
    def importance(self) -> np.ndarray:
        """Float `(M, N)`: accumulated gradient importance of each binary convolution."""
        self._check_built("importance")
        return np.asarray(tf.keras.backend.get_value(self.importance_variable))

    @property
    def active_binary_convs(self) -> int:
        return int(self.binary_conv_mask.sum())

    @property
    def num_binary_convs(self) -> int:
        return self.weight_bases * self.activation_bases

    def _check_index(self, m: Any, n: Any):
        for name, value, size in (("m", m, self.weight_bases), ("n", n, self.activation_bases)):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, np.integer))
                or not 0 <= value < size
            ):
                raise ValueError(
                    f"{self.name}: `{name}` must be an integer in [0, {size}), got {value!r}."
                )

    def prune(self, m: int, n: int) -> bool:
        """Deactivate binary convolution `(m, n)`.

        # Returns
            `True` if it was active, `False` if it was already pruned.

        # Raises
            ValueError: on an index out of range, or if `(m, n)` is the layer's last
                active binary convolution (a layer must keep at least one).
        """
        self._check_built("prune")
        self._check_index(m, n)
        mask = self.binary_conv_mask
        if not mask[m, n]:
            return False
        if mask.sum() <= 1:
            raise ValueError(
                f"{self.name}: cannot prune binary convolution ({m}, {n}): it is the "
                "layer's last active one."
            )
        mask[m, n] = False
        self.mask.assign(mask.astype(np.float32))
        return True

    def set_binary_conv_mask(self, mask: Any) -> None:
        """Set the whole `(M, N)` mask (bool or 0/1); at least one entry must be active.

        # Raises
            ValueError: on a wrong shape or an all-inactive mask.
        """
        self._check_built("set_binary_conv_mask")
        mask = np.asarray(mask)
        if mask.shape != (self.weight_bases, self.activation_bases):
            raise ValueError(
                f"{self.name}: `mask` must have shape "
                f"{(self.weight_bases, self.activation_bases)}, got {mask.shape}."
            )
        mask = mask.astype(bool)
        if not mask.any():
            raise ValueError(f"{self.name}: `mask` must keep at least one binary convolution.")
        self.mask.assign(mask.astype(np.float32))

    # -- cost -------------------------------------------------------------------------

    def binary_conv_macs(self) -> int:
        """MACs of *one* binary convolution (per example)."""
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


@tf.keras.utils.register_keras_serializable(package="pabt_tf")
class PaBTConv2D(PaBTLayer):
    """Multi-base binary 2D convolution (channels last).

    `M · N` binary convolutions `conv(sign(x − θ_n), B_m)`, each scaled per output
    channel by `α_m` and by its gate; see `PaBTLayer` for the shared arguments.
    With `padding="same"` the *binarized* input is padded with +1 (Larq's
    `pad_values=1.0`), so training and the deployed LCE op compute the same function.

    # Arguments
        filters: number of output channels.
        kernel_size: int or (kh, kw).
        strides: int or (sh, sw).
        padding: `"valid"` or `"same"`.
        dilation_rate: int or (dh, dw); cannot be combined with strides > 1.
        data_format: only `"channels_last"`.
    """

    _rank = 2

    def __init__(
        self,
        filters: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] = 1,
        padding: str = "valid",
        dilation_rate: int | Sequence[int] = 1,
        data_format: str | None = None,
        weight_bases: int = 3,
        activation_bases: int = 3,
        bases: str = "independent",
        latent_weights: bool = True,
        **kwargs,
    ):
        self.filters = _check_positive_int("filters", filters)
        self.kernel_size = _normalize_tuple("kernel_size", kernel_size, 2)
        self.strides = _normalize_tuple("strides", strides, 2)
        self.dilation_rate = _normalize_tuple("dilation_rate", dilation_rate, 2)
        if not isinstance(padding, str) or padding.lower() not in ("same", "valid"):
            raise ValueError(f"`padding` must be 'same' or 'valid', got {padding!r}.")
        self.padding = padding.lower()
        if data_format not in (None, "channels_last"):
            raise ValueError(
                f"`data_format` must be 'channels_last' (or None), got {data_format!r}."
            )
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(
                "`strides` > 1 cannot be combined with `dilation_rate` > 1, got "
                f"strides={self.strides}, dilation_rate={self.dilation_rate}."
            )
        super().__init__(
            self.filters,
            weight_bases=weight_bases,
            activation_bases=activation_bases,
            bases=bases,
            latent_weights=latent_weights,
            **kwargs,
        )
        self.input_spec = tf.keras.layers.InputSpec(ndim=4)

    def _kernel_shape(self, in_channels: int) -> tuple[int, ...]:
        return (*self.kernel_size, in_channels, self.filters)

    def _same_pads(self, x: tf.Tensor):
        """Spatial dims of `x` (static where known) and TF's 'same' (before, after) pads."""
        dims = [x.shape[1], x.shape[2]]
        if dims[0] is None or dims[1] is None:
            dyn = tf.shape(x)
            dims = [dyn[1] if dims[0] is None else dims[0], dyn[2] if dims[1] is None else dims[1]]
        pads = [
            _same_padding(size, s, d, k)
            for size, s, d, k in zip(dims, self.strides, self.dilation_rate, self.kernel_size)
        ]
        return dims, pads

    def pad(self, x: tf.Tensor) -> tf.Tensor:
        """Pad a binarized input with +1 for 'same' padding (identity for 'valid')."""
        if self.padding == "valid":
            return x
        _, pads = self._same_pads(x)
        return tf.pad(x, [[0, 0], pads[0], pads[1], [0, 0]], constant_values=1.0)

    def _base_op(self, h: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        # 'same' runs as TF's zero-padded SAME convolution (padding inside the conv
        # kernel, no padded copy of the input, no slice in the backward pass); the
        # difference to +1 padding is added by `_padding_correction`.
        return tf.nn.conv2d(
            h,
            kernel,
            strides=[1, *self.strides, 1],
            padding=self.padding.upper(),
            dilations=[1, *self.dilation_rate, 1],
        )

    def _padding_correction(self, inputs: tf.Tensor, folded: tf.Tensor) -> tf.Tensor | None:
        # conv(pad(H, +1), K) = conv_same(H, K) + conv(pad(0, +1), K): the second term
        # does not depend on the input. Summed over the input channels and the
        # activation bases (all padded alike), it is a batch-1, 1-channel convolution
        # of a border indicator: (1, Ho, Wo, O), broadcast over the batch.
        if self.padding == "valid":
            return None
        dims, pads = self._same_pads(inputs)
        if all(isinstance(p, int) and p == 0 for pair in pads for p in pair):
            return None
        border = tf.pad(
            tf.zeros(tf.stack([1, dims[0], dims[1], 1]), folded.dtype),
            [[0, 0], pads[0], pads[1], [0, 0]],
            constant_values=1.0,
        )
        kernel = tf.reduce_sum(folded, axis=[0, 3])[:, :, None, :]  # (kh, kw, 1, O)
        return tf.nn.conv2d(
            border,
            kernel,
            strides=[1, *self.strides, 1],
            padding="VALID",
            dilations=[1, *self.dilation_rate, 1],
        )

    def compute_output_shape(self, input_shape):
        input_shape = tf.TensorShape(input_shape).as_list()
        out = []
        for size, s, d, k in zip(input_shape[1:3], self.strides, self.dilation_rate, self.kernel_size):
            if size is None:
                out.append(None)
            elif self.padding == "same":
                out.append((size + s - 1) // s)
            else:
                out.append((size - (k - 1) * d - 1) // s + 1)
        return tf.TensorShape([input_shape[0], *out, self.filters])

    def _output_pixels(self) -> int:
        shape = self.compute_output_shape(self._input_shape_for_macs)
        if shape[1] is None or shape[2] is None:
            raise ValueError(f"{self.name}: MACs need known spatial input dimensions.")
        return int(shape[1]) * int(shape[2])

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "dilation_rate": self.dilation_rate,
        }


@tf.keras.utils.register_keras_serializable(package="pabt_tf")
class PaBTDense(PaBTLayer):
    """Multi-base binary fully connected layer.

    `M · N` binary matrix products `sign(x − θ_n) · B_m` over the last axis; see
    `PaBTLayer` for the shared arguments. For deployment it becomes a 1×1 binary
    convolution (LCE has no binary dense op).

    # Arguments
        units: number of output units.
    """

    def __init__(
        self,
        units: int,
        weight_bases: int = 3,
        activation_bases: int = 3,
        bases: str = "independent",
        latent_weights: bool = True,
        **kwargs,
    ):
        self.units = _check_positive_int("units", units)
        super().__init__(
            self.units,
            weight_bases=weight_bases,
            activation_bases=activation_bases,
            bases=bases,
            latent_weights=latent_weights,
            **kwargs,
        )
        self.input_spec = tf.keras.layers.InputSpec(min_ndim=2)

    def _kernel_shape(self, in_channels: int) -> tuple[int, ...]:
        return (in_channels, self.units)

    def _base_op(self, h: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        if h.shape.rank == 2:
            return tf.matmul(h, kernel)
        return tf.tensordot(h, kernel, axes=[[h.shape.rank - 1], [0]])

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)[:-1].concatenate([self.units])

    def _output_pixels(self) -> int:
        return int(np.prod([d or 1 for d in self._input_shape_for_macs[1:-1]], dtype=np.int64))

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units}


def pabt_layers(model: tf.keras.Model) -> list[PaBTLayer]:
    """All PaBT layers of a model, nested models included, in topological order."""
    found: list[PaBTLayer] = []
    seen: set[int] = set()

    def visit(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if isinstance(layer, PaBTLayer):
            found.append(layer)
        for sub in getattr(layer, "layers", []) or []:
            visit(sub)

    visit(model)
    return found
