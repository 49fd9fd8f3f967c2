"""Model zoo: the same architectures for PaBT and its baselines.

Every builder takes `method=` (one of `pabt_tf.methods.METHODS`: `"pabt"`, `"abc"`,
`"bnn"`, `"bnn_bireal"`, `"bnn_bop"`, `"float"`; see `pabt_tf.methods` for what a binary
position is under each). Binary positions are named `bconv_<i>` in every method, so the
networks can be compared position by position. First and last layers, shortcuts and
downsampling are full precision; a BatchNormalization follows every binary convolution.
A `"pabt"` network is a `PaBTModel`, every other one a plain `tf.keras.Model`.

| builder | data | binary positions |
|---|---|---|
| `fmnist_cnn` | Fashion-MNIST 28×28×1 | 4 (3×3) |
| `fmnist_resnet` | Fashion-MNIST 28×28×1 | 6 (Bi-Real / IR-Net style, 3 stages) |
| `resnet20` | CIFAR-10 32×32×3 | 18 (Bi-Real style) |
| `vgg_small` | CIFAR-10 32×32×3 | 5 |
| `resnet18` | ImageNet 224×224×3 (CIFAR stem with `cifar_stem=True`) | 16 (Bi-Real / IR-Net style) |
| `segmentation_resnet18` | Cityscapes | 16 (encoder; light float decoder) |
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from pabt_tf.methods import (
    METHODS,
    BinaryPositions,
    binary_conv,
    check_method,
    get_optimizer,
    uses_bop,
)
from pabt_tf.training import PaBTModel

__all__ = [
    "METHODS",
    "MODELS",
    "build_model",
    "binary_conv",
    "fmnist_cnn",
    "fmnist_resnet",
    "resnet20",
    "vgg_small",
    "resnet18",
    "segmentation_resnet18",
    "get_optimizer",
    "uses_bop",
]

_LAYERS = tf.keras.layers


def _bn(x, name=None, momentum=0.9):
    return _LAYERS.BatchNormalization(momentum=momentum, epsilon=1e-5, name=name)(x)


def _finish(spec: BinaryPositions, inputs, outputs, name: str, **model_kwargs) -> tf.keras.Model:
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
            weight storage (method `"pabt"`; ABC-Net uses `abc_bases`, latent).
        kwargs: `criterion`, `importance_momentum` (PaBTModel), `float_activation`,
            `per_channel_thresholds`, `threshold_spread`, `abc_bases` (ABC-Net's `(M, N)`),
            `activation_quantizer` (the multi-base layers' pseudo-gradient, e.g. `"approx_sign"`).
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
    spec = BinaryPositions(method, weight_bases, activation_bases, latent_weights, **kwargs)
    return model_kwargs, spec


def _bireal_conv(spec: BinaryPositions, x, filters: int, strides: int, tag: str):
    """Bi-Real unit: `BN(bconv(x)) + shortcut(x)`; the shortcut is real-valued, a 2×2
    average pool + float 1×1 conv + BN when the shape changes."""
    shortcut = x
    if strides > 1 or x.shape[-1] != filters:
        if strides > 1:
            # "same": odd sizes round up like the strided conv (identical on even sizes).
            shortcut = _LAYERS.AveragePooling2D(strides, padding="same", name=f"{tag}_down_pool")(shortcut)
        shortcut = _LAYERS.Conv2D(filters, 1, use_bias=False, name=f"{tag}_down_conv")(shortcut)
        shortcut = _bn(shortcut, f"{tag}_down_bn")
    y = spec.conv(filters, 3, strides=strides)(x)
    y = _bn(y, f"{tag}_bn")
    return _LAYERS.Add(name=f"{tag}_add")([y, shortcut])


def _resnet_body(spec: BinaryPositions, x, stage_filters, blocks_per_stage, first_stride_per_stage):
    """Stacked basic blocks (two Bi-Real units each); returns each stage's output."""
    outputs = []
    for s, (filters, blocks) in enumerate(zip(stage_filters, blocks_per_stage)):
        for b in range(blocks):
            strides = first_stride_per_stage[s] if b == 0 else 1
            x = _bireal_conv(spec, x, filters, strides, f"s{s}b{b}c0")
            x = _bireal_conv(spec, x, filters, 1, f"s{s}b{b}c1")
        outputs.append(x)
    return outputs


def fmnist_resnet(
    method: str = "pabt",
    input_shape: tuple[int, ...] = (28, 28, 1),
    num_classes: int = 10,
    stem_filters: int = 32,
    stage_filters: tuple[int, ...] = (32, 64, 128),
    blocks_per_stage: tuple[int, ...] = (1, 1, 1),
    weight_bases: int = 3,
    activation_bases: int = 3,
    latent_weights: bool = True,
    **kwargs,
) -> tf.keras.Model:
    """A residual binary network for 28×28 inputs in the Bi-Real / IR-Net style.

    Float 3×3 stem (`stem_filters`) + BN + 2×2 max-pool (28 → 14), then stages of basic
    blocks (two binary 3×3 units each; `blocks_per_stage`, channels `stage_filters`,
    stride 2 at the start of every stage but the first: 14 → 7 → 4). Every binary 3×3
    convolution is followed by BN and wrapped by its own real-valued shortcut; the
    shortcut downsamples as in Bi-Real Net (2×2 average pool + float 1×1 conv + BN) when
    the shape changes. Global average pooling and a float classifier.

    # Arguments
        stage_filters, blocks_per_stage: channels and basic blocks of each stage.
        Others: see `fmnist_cnn`.
    """
    if len(stage_filters) != len(blocks_per_stage) or not stage_filters:
        raise ValueError(
            "`stage_filters` and `blocks_per_stage` must be non-empty and of the same length, "
            f"got {stage_filters!r} and {blocks_per_stage!r}."
        )
    model_kwargs, spec = _split_kwargs(method, weight_bases, activation_bases, latent_weights, kwargs)
    inputs = tf.keras.Input(input_shape)
    x = _LAYERS.Conv2D(stem_filters, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = _bn(x, "stem_bn")
    x = _LAYERS.MaxPool2D(2, name="stem_pool")(x)
    strides = (1,) + (2,) * (len(stage_filters) - 1)
    x = _resnet_body(spec, x, tuple(stage_filters), tuple(blocks_per_stage), strides)[-1]
    x = _LAYERS.GlobalAveragePooling2D(name="gap")(x)
    outputs = _LAYERS.Dense(num_classes, name="logits")(x)
    return _finish(spec, inputs, outputs, f"fmnist_resnet_{method}", **model_kwargs)


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


def _resnet18_stem(x, cifar_stem: bool, width: int, relu: bool):
    """Float stem. `relu` only for the float network: a ReLU before the first block's
    sign makes that sign +1 everywhere (sign(0) = +1), so the first binary convolution
    would see a constant input and output one constant per channel (measured on a
    CamVid BNN: all 32 channels). Binary networks end the stem at batch norm and
    max-pool, as Larq Zoo's Bi-Real Net."""
    if cifar_stem:
        x = _LAYERS.Conv2D(width, 3, padding="same", use_bias=False, name="stem_conv")(x)
        return _bn(x, "stem_bn")
    x = _LAYERS.Conv2D(width, 7, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = _bn(x, "stem_bn")
    if relu:
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
    x = _resnet18_stem(inputs, cifar_stem, width, relu=spec.method == "float")
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
    x = _resnet18_stem(inputs, False, width, relu=spec.method == "float")
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
    "fmnist_resnet": fmnist_resnet,
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
    check_method(method)
    return MODELS[name](method=method, **kwargs)
