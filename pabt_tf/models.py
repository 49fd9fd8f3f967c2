"""Model zoo: the same architectures for PaBT and its baselines.

Every builder takes `method=`:

- `"pabt"`: binary positions are `PaBTConv2D` with `M` independent weight bases and `N`
  activation bases (latent or latent-weight-free), in a `PaBTModel` that a
  `PaBTPruningCallback` prunes to a BNN during training;
- `"abc"`: ABC-Net, the same multi-base layers with `bases="abc"`, `M = N = 3`, never
  pruned (a plain `tf.keras.Model`);
- `"bnn"`: Larq `QuantConv2D` with `ste_sign` input and kernel quantizers, `weight_clip`
  and `pad_values=1.0` (straight-through latent-weight BNN);
- `"bnn_bop"`: the same Larq BNN with ±1 kernels (`NoOp(precision=1)`) trained by Bop;
- `"float"`: `Conv2D` with a ReLU on its input where the other methods binarize it.

Binary positions are named `bconv_<i>` in every method, so the networks can be compared
position by position. First and last layers, shortcuts and downsampling are full
precision; a BatchNormalization follows every binary convolution.

| builder | data | binary positions |
|---|---|---|
| `fmnist_cnn` | Fashion-MNIST 28×28×1 | 4 (3×3) |
| `resnet20` | CIFAR-10 32×32×3 | 18 (Bi-Real style) |
| `vgg_small` | CIFAR-10 32×32×3 | 5 |
| `resnet18` | ImageNet 224×224×3 (CIFAR stem with `cifar_stem=True`) | 16 (Bi-Real / IR-Net style) |
| `segmentation_resnet18` | Cityscapes | 16 (encoder; light float decoder) |
"""

from __future__ import annotations

from typing import Any, Callable

import larq as lq
import tensorflow as tf

from pabt_tf.layers import PaBTConv2D
from pabt_tf.quantizers import RandomSign
from pabt_tf.training import PaBTModel

__all__ = [
    "METHODS",
    "MODELS",
    "build_model",
    "binary_conv",
    "fmnist_cnn",
    "resnet20",
    "vgg_small",
    "resnet18",
    "segmentation_resnet18",
    "get_optimizer",
    "uses_bop",
]

METHODS = ("pabt", "abc", "bnn", "bnn_bop", "float")
_LAYERS = tf.keras.layers


def _check_method(method: Any) -> str:
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}.")
    return method


def uses_bop(method: str, latent_weights: bool = True) -> bool:
    """Whether `method` trains ±1 kernels with Bop (needs `get_optimizer`'s CaseOptimizer)."""
    _check_method(method)
    return method == "bnn_bop" or (method == "pabt" and not latent_weights)


class _Spec:
    """What a builder needs to create a binary position for one method."""

    def __init__(
        self,
        method: str,
        weight_bases: int = 3,
        activation_bases: int = 3,
        latent_weights: bool = True,
        float_activation: str = "relu",
        per_channel_thresholds: bool = False,
        threshold_spread: float = 0.5,
    ):
        self.method = _check_method(method)
        if method == "abc":  # ABC-Net is always 3/3 with latent weights
            weight_bases, activation_bases, latent_weights = 3, 3, True
        if not isinstance(latent_weights, bool):
            raise ValueError(f"`latent_weights` must be a bool, got {latent_weights!r}.")
        self.weight_bases = weight_bases
        self.activation_bases = activation_bases
        self.latent_weights = latent_weights
        self.float_activation = float_activation
        self.per_channel_thresholds = per_channel_thresholds
        self.threshold_spread = threshold_spread
        self.count = 0

    def conv(self, filters: int, kernel_size: int = 3, strides: int = 1, padding: str = "same"):
        """A binary position: `x -> conv(x)` (input binarization included)."""
        name = f"bconv_{self.count}"
        self.count += 1
        return binary_conv(
            self.method,
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            weight_bases=self.weight_bases,
            activation_bases=self.activation_bases,
            latent_weights=self.latent_weights,
            float_activation=self.float_activation,
            per_channel_thresholds=self.per_channel_thresholds,
            threshold_spread=self.threshold_spread,
            name=name,
        )


def binary_conv(
    method: str,
    filters: int,
    kernel_size: int = 3,
    strides: int = 1,
    padding: str = "same",
    weight_bases: int = 3,
    activation_bases: int = 3,
    latent_weights: bool = True,
    float_activation: str = "relu",
    per_channel_thresholds: bool = False,
    threshold_spread: float = 0.5,
    name: str | None = None,
) -> Callable[[tf.Tensor], tf.Tensor]:
    """One binary convolution position for `method` (no bias; add BatchNorm after it).

    # Returns
        A function `x -> y` applying the layer (and, for `"float"`, the ReLU before it).

    # Raises
        ValueError: on an unknown method.
    """
    _check_method(method)
    common = dict(strides=strides, padding=padding, use_bias=False, name=name)
    if method in ("pabt", "abc"):
        layer = PaBTConv2D(
            filters,
            kernel_size,
            weight_bases=3 if method == "abc" else weight_bases,
            activation_bases=3 if method == "abc" else activation_bases,
            bases="abc" if method == "abc" else "independent",
            latent_weights=True if method == "abc" else latent_weights,
            per_channel_thresholds=per_channel_thresholds,
            threshold_spread=threshold_spread,
            **common,
        )
    elif method == "bnn":
        layer = lq.layers.QuantConv2D(
            filters,
            kernel_size,
            input_quantizer="ste_sign",
            kernel_quantizer="ste_sign",
            kernel_constraint="weight_clip",
            pad_values=1.0,
            **common,
        )
    elif method == "bnn_bop":
        layer = lq.layers.QuantConv2D(
            filters,
            kernel_size,
            input_quantizer="ste_sign",
            kernel_quantizer=lq.quantizers.NoOp(precision=1),
            kernel_initializer=RandomSign(),
            pad_values=1.0,
            **common,
        )
    else:
        layer = _LAYERS.Conv2D(filters, kernel_size, **common)
        if float_activation:
            activation = _LAYERS.Activation(float_activation, name=f"act_{name}" if name else None)
            return lambda x: layer(activation(x))
    return layer


def _bn(x, name=None, momentum=0.9):
    return _LAYERS.BatchNormalization(momentum=momentum, epsilon=1e-5, name=name)(x)


def _finish(spec: _Spec, inputs, outputs, name: str, **model_kwargs) -> tf.keras.Model:
    if spec.method == "pabt":
        return PaBTModel(inputs, outputs, name=name, **model_kwargs)
    return tf.keras.Model(inputs, outputs, name=name)


def fmnist_cnn(
    method: str = "pabt",
    input_shape: tuple[int, ...] = (28, 28, 1),
    num_classes: int = 10,
    stem_filters: int = 32,
    filters: tuple[int, ...] = (32, 32, 64, 64),
    pool_after: tuple[int, ...] = (1, 3),
    weight_bases: int = 3,
    activation_bases: int = 3,
    latent_weights: bool = True,
    **kwargs,
) -> tf.keras.Model:
    """A small CNN for Fashion-MNIST.

    Float 3×3 stem (`stem_filters`) + BN + max-pool, then binary 3×3 convolutions of
    `filters` channels, each followed by BN (and a 2×2 max-pool after the positions in
    `pool_after`), then global average pooling and a float dense classifier.

    # Arguments
        method: one of `METHODS`.
        weight_bases, activation_bases, latent_weights: the PaBT layers' `M`, `N` and
            weight storage (method `"pabt"`; ABC-Net always uses 3, 3, latent).
        kwargs: `criterion`, `importance_momentum` (PaBTModel), `float_activation`,
            `per_channel_thresholds`, `threshold_spread`.
    """
    model_kwargs, spec = _split_kwargs(method, weight_bases, activation_bases, latent_weights, kwargs)
    inputs = tf.keras.Input(input_shape)
    x = _LAYERS.Conv2D(stem_filters, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = _bn(x, "stem_bn")
    x = _LAYERS.MaxPool2D(2, name="stem_pool")(x)
    for i, f in enumerate(filters):
        x = spec.conv(f)(x)
        x = _bn(x, f"bn_{i}")
        if i in pool_after:
            x = _LAYERS.MaxPool2D(2, name=f"pool_{i}")(x)
    x = _LAYERS.GlobalAveragePooling2D(name="gap")(x)
    outputs = _LAYERS.Dense(num_classes, name="logits")(x)
    return _finish(spec, inputs, outputs, f"fmnist_cnn_{method}", **model_kwargs)


def _split_kwargs(method, weight_bases, activation_bases, latent_weights, kwargs):
    kwargs = dict(kwargs)
    model_kwargs = {k: kwargs.pop(k) for k in ("criterion", "importance_momentum") if k in kwargs}
    spec = _Spec(method, weight_bases, activation_bases, latent_weights, **kwargs)
    return model_kwargs, spec


def _bireal_conv(spec: _Spec, x, filters: int, strides: int, tag: str):
    """Bi-Real unit: `BN(bconv(x)) + shortcut(x)`; the shortcut is real-valued, a 2×2
    average pool + float 1×1 conv + BN when the shape changes."""
    shortcut = x
    if strides > 1 or x.shape[-1] != filters:
        if strides > 1:
            shortcut = _LAYERS.AveragePooling2D(strides, name=f"{tag}_down_pool")(shortcut)
        shortcut = _LAYERS.Conv2D(filters, 1, use_bias=False, name=f"{tag}_down_conv")(shortcut)
        shortcut = _bn(shortcut, f"{tag}_down_bn")
    y = spec.conv(filters, 3, strides=strides)(x)
    y = _bn(y, f"{tag}_bn")
    return _LAYERS.Add(name=f"{tag}_add")([y, shortcut])


def _resnet_body(spec: _Spec, x, stage_filters, blocks_per_stage, first_stride_per_stage):
    """Stacked basic blocks (two Bi-Real units each); returns each stage's output."""
    outputs = []
    for s, (filters, blocks) in enumerate(zip(stage_filters, blocks_per_stage)):
        for b in range(blocks):
            strides = first_stride_per_stage[s] if b == 0 else 1
            x = _bireal_conv(spec, x, filters, strides, f"s{s}b{b}c0")
            x = _bireal_conv(spec, x, filters, 1, f"s{s}b{b}c1")
        outputs.append(x)
    return outputs


def resnet20(
    method: str = "pabt",
    input_shape: tuple[int, ...] = (32, 32, 3),
    num_classes: int = 10,
    width: int = 16,
    weight_bases: int = 3,
    activation_bases: int = 3,
    latent_weights: bool = True,
    **kwargs,
) -> tf.keras.Model:
    """ResNet-20 for CIFAR-10 (3 stages × 3 basic blocks, `width`·(1, 2, 4) channels),
    binary in the Bi-Real / IR-Net style: every 3×3 convolution of the blocks is binary
    with its own real-valued shortcut; float stem and classifier.

    # Arguments
        See `fmnist_cnn`.
    """
    model_kwargs, spec = _split_kwargs(method, weight_bases, activation_bases, latent_weights, kwargs)
    inputs = tf.keras.Input(input_shape)
    x = _LAYERS.Conv2D(width, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = _bn(x, "stem_bn")
    x = _resnet_body(spec, x, (width, 2 * width, 4 * width), (3, 3, 3), (1, 2, 2))[-1]
    x = _LAYERS.GlobalAveragePooling2D(name="gap")(x)
    outputs = _LAYERS.Dense(num_classes, name="logits")(x)
    return _finish(spec, inputs, outputs, f"resnet20_{method}", **model_kwargs)


def vgg_small(
    method: str = "pabt",
    input_shape: tuple[int, ...] = (32, 32, 3),
    num_classes: int = 10,
    width: int = 128,
    weight_bases: int = 3,
    activation_bases: int = 3,
    latent_weights: bool = True,
    **kwargs,
) -> tf.keras.Model:
    """VGG-Small for CIFAR-10 (LQ-Nets / IR-Net): float conv(128), then binary
    conv(128)-pool, conv(256), conv(256)-pool, conv(512), conv(512)-pool, each binary
    conv followed by BN (before the pool), and a float dense classifier.

    # Arguments
        width: channels of the first stage (128 in the paper setting).
        Others: see `fmnist_cnn`.
    """
    model_kwargs, spec = _split_kwargs(method, weight_bases, activation_bases, latent_weights, kwargs)
    inputs = tf.keras.Input(input_shape)
    x = _LAYERS.Conv2D(width, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = _bn(x, "stem_bn")
    for i, (mult, pool) in enumerate(((1, True), (2, False), (2, True), (4, False), (4, True))):
        x = _bn(spec.conv(width * mult)(x), f"bn_{i}")
        if pool:
            x = _LAYERS.MaxPool2D(2, name=f"pool_{i}")(x)
    x = _LAYERS.Flatten(name="flatten")(x)
    outputs = _LAYERS.Dense(num_classes, name="logits")(x)
    return _finish(spec, inputs, outputs, f"vgg_small_{method}", **model_kwargs)


def _resnet18_stem(x, cifar_stem: bool, width: int):
    if cifar_stem:
        x = _LAYERS.Conv2D(width, 3, padding="same", use_bias=False, name="stem_conv")(x)
        return _bn(x, "stem_bn")
    x = _LAYERS.Conv2D(width, 7, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = _bn(x, "stem_bn")
    x = _LAYERS.ReLU(name="stem_relu")(x)
    return _LAYERS.MaxPool2D(3, strides=2, padding="same", name="stem_pool")(x)


def resnet18(
    method: str = "pabt",
    input_shape: tuple[int, ...] = (224, 224, 3),
    num_classes: int = 1000,
    width: int = 64,
    cifar_stem: bool = False,
    weight_bases: int = 3,
    activation_bases: int = 3,
    latent_weights: bool = True,
    **kwargs,
) -> tf.keras.Model:
    """ResNet-18 in the Bi-Real / IR-Net style: float 7×7 stem (3×3 with
    `cifar_stem=True`, for CIFAR-10), 4 stages × 2 basic blocks of
    `width`·(1, 2, 4, 8) channels whose 16 3×3 convolutions are binary, each with BN
    and a real-valued shortcut (average pool + float 1×1 conv + BN when downsampling),
    then global average pooling and a float classifier.

    # Arguments
        See `fmnist_cnn`.
    """
    model_kwargs, spec = _split_kwargs(method, weight_bases, activation_bases, latent_weights, kwargs)
    inputs = tf.keras.Input(input_shape)
    x = _resnet18_stem(inputs, cifar_stem, width)
    x = _resnet_body(spec, x, [width * m for m in (1, 2, 4, 8)], (2, 2, 2, 2), (1, 2, 2, 2))[-1]
    x = _LAYERS.GlobalAveragePooling2D(name="gap")(x)
    outputs = _LAYERS.Dense(num_classes, name="logits")(x)
    return _finish(spec, inputs, outputs, f"resnet18_{method}", **model_kwargs)


def segmentation_resnet18(
    method: str = "pabt",
    input_shape: tuple[int, ...] = (512, 1024, 3),
    num_classes: int = 19,
    width: int = 64,
    decoder_filters: int = 128,
    weight_bases: int = 3,
    activation_bases: int = 3,
    latent_weights: bool = True,
    **kwargs,
) -> tf.keras.Model:
    """Semantic segmentation: the binary ResNet-18 encoder of `resnet18` and a light
    float decoder (FPN-like: 1×1 projections of the stride 8, 16 and 32 features,
    bilinear upsampling and addition, a 3×3 conv, a 1×1 classifier, ×8 upsampling).

    Output: per-pixel logits `(H, W, num_classes)`; `H`, `W` must be multiples of 32.

    # Arguments
        See `fmnist_cnn`.

    # Raises
        ValueError: if the input size is not a multiple of 32.
    """
    if any(s is not None and s % 32 for s in input_shape[:2]):
        raise ValueError(f"`input_shape` height and width must be multiples of 32, got {input_shape}.")
    model_kwargs, spec = _split_kwargs(method, weight_bases, activation_bases, latent_weights, kwargs)
    inputs = tf.keras.Input(input_shape)
    x = _resnet18_stem(inputs, False, width)
    s8, s16, s32 = _resnet_body(
        spec, x, [width * m for m in (1, 2, 4, 8)], (2, 2, 2, 2), (1, 2, 2, 2)
    )[1:]

    def project(t, tag):
        t = _LAYERS.Conv2D(decoder_filters, 1, use_bias=False, name=f"dec_{tag}_proj")(t)
        return _bn(t, f"dec_{tag}_bn")

    y = _LAYERS.ReLU(name="dec_s32_relu")(project(s32, "s32"))
    for tag, skip in (("s16", s16), ("s8", s8)):
        y = _LAYERS.UpSampling2D(2, interpolation="bilinear", name=f"dec_{tag}_up")(y)
        y = _LAYERS.Add(name=f"dec_{tag}_add")([y, project(skip, tag)])
        y = _LAYERS.ReLU(name=f"dec_{tag}_relu")(y)
    y = _LAYERS.Conv2D(decoder_filters, 3, padding="same", use_bias=False, name="dec_conv")(y)
    y = _LAYERS.ReLU(name="dec_conv_relu")(_bn(y, "dec_conv_bn"))
    y = _LAYERS.Conv2D(num_classes, 1, name="dec_logits")(y)
    outputs = _LAYERS.UpSampling2D(8, interpolation="bilinear", name="logits")(y)
    return _finish(spec, inputs, outputs, f"segmentation_resnet18_{method}", **model_kwargs)


MODELS: dict[str, Callable[..., tf.keras.Model]] = {
    "fmnist_cnn": fmnist_cnn,
    "resnet20": resnet20,
    "vgg_small": vgg_small,
    "resnet18": resnet18,
    "segmentation_resnet18": segmentation_resnet18,
}


def build_model(name: str, method: str = "pabt", **kwargs) -> tf.keras.Model:
    """Build zoo model `name` (a key of `MODELS`) for `method`.

    # Raises
        ValueError: on an unknown model or method.
    """
    if name not in MODELS:
        raise ValueError(f"`name` must be one of {tuple(MODELS)}, got {name!r}.")
    _check_method(method)
    return MODELS[name](method=method, **kwargs)


def get_optimizer(
    method: str,
    learning_rate: float | tf.keras.optimizers.schedules.LearningRateSchedule = 1e-3,
    latent_weights: bool = True,
    bop_threshold: float = 1e-8,
    bop_gamma: float | tf.keras.optimizers.schedules.LearningRateSchedule = 1e-4,
) -> tf.keras.optimizers.Optimizer:
    """The optimizer for `method`.

    Latent-weight-free methods (`"bnn_bop"`, and `"pabt"` with `latent_weights=False`)
    get `CaseOptimizer((Bop.is_binary_variable, Bop(threshold, gamma)),
    default_optimizer=legacy Adam(learning_rate))`: Bop flips the ±1 kernels, Adam
    trains everything else (scales, gates, thresholds, BN, float layers). Every other
    method gets legacy Adam (the legacy optimizers are what `CaseOptimizer` needs; using
    them everywhere keeps the comparison fair).

    # Raises
        ValueError: on an unknown method.
    """
    adam = tf.keras.optimizers.legacy.Adam(learning_rate)
    if uses_bop(method, latent_weights):
        return lq.optimizers.CaseOptimizer(
            (lq.optimizers.Bop.is_binary_variable, lq.optimizers.Bop(bop_threshold, bop_gamma)),
            default_optimizer=adam,
        )
    return adam
