"""The pieces every data set's pipelines are built from: the `Datasets` record, the
seeded train / validation split, normalisation, pad-crop-flip augmentation, the shuffled
and augmented training pipeline, batching, and the checks of the arguments they share."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf

__all__ = [
    "Datasets",
    "fingerprint",
    "split_train_validation",
    "check_batch_size",
    "check_limit",
    "check_validation_size",
    "check_normalization",
    "check_pipeline_arguments",
    "normalize_image",
    "pad_crop_flip",
    "batch",
    "train_pipeline",
    "array_pipelines",
]


@dataclasses.dataclass
class Datasets:
    """Batched train / validation / test pipelines and what a model needs to know.

    `train` is shuffled (and augmented, if asked) anew every epoch, deterministically
    for a given seed; `validation` and `test` are neither.
    """

    train: tf.data.Dataset
    validation: tf.data.Dataset
    test: tf.data.Dataset
    input_shape: tuple[int, ...]
    num_classes: int
    train_size: int
    validation_size: int
    test_size: int
    batch_size: int
    name: str = ""
    classes: tuple[str, ...] = ()
    mean: tuple[float, ...] | None = None  # the normalisation used, on a 0-1 scale
    std: tuple[float, ...] | None = None
    # What the task is decides the loss and metrics (never the data set's name).
    task: str = "classification"  # or "segmentation": labels (h, w), logits (h, w, classes)
    ignore_label: int | None = None  # a label out of the loss and every metric
    class_weights: tuple[float, ...] | None = None  # per class, for the loss (None = equal)
    # Segmentation: the test images at the model's resolution with their labels at the
    # original one (`full_size`), for the benchmark's evaluation with upsampled logits.
    test_full: tf.data.Dataset | None = None
    full_size: tuple[int, int] | None = None
    colors: tuple[tuple[int, int, int], ...] | None = None  # per class, for pictures
    fingerprint: str = ""  # of the examples read (`fingerprint`): a resume checks it

    @property
    def steps_per_epoch(self) -> int:
        """Training batches per epoch (the last, smaller batch included)."""
        return -(-self.train_size // self.batch_size)


_SAMPLE = 1 << 20  # values of an array that go into its fingerprint


def fingerprint(*parts: Any) -> str:
    """A short hash that changes when the data changes, cheap to compute at every load.

    An array contributes its shape, dtype and about a million evenly spaced values
    (every value of a label array, a strided sample of the pixels of an image array);
    anything else its `repr` (class names, a tfds builder's version and split sizes).

    # Returns
        16 hexadecimal digits.
    """
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(repr((part.shape, part.dtype.str)).encode())
            flat = part.reshape(-1)
            digest.update(np.ascontiguousarray(flat[:: max(1, flat.size // _SAMPLE)]).tobytes())
        else:
            digest.update(repr(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


# -- argument checks --------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    # A bool is an int to Python but never a meaningful size here.
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def check_batch_size(batch_size: Any) -> int:
    """`batch_size` as an int.

    # Raises
        ValueError: if it is not a positive integer.
    """
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
    return int(batch_size)


def check_limit(name: str, value: Any) -> None:
    """Check an optional cap on a number of examples (`train_limit`, `limit`, ...).

    # Raises
        ValueError: naming `name`, if `value` is neither None nor a positive integer.
    """
    if value is not None and (not _is_int(value) or value < 1):
        raise ValueError(f"`{name}` must be a positive integer or None, got {value!r}.")


def check_validation_size(validation_size: Any, n: int) -> None:
    """Check the number of examples to hold out of `n` training examples.

    # Raises
        ValueError: if `validation_size` is not an integer in `[0, n)` (some training
            example must remain).
    """
    if not _is_int(validation_size):
        raise ValueError(f"`validation_size` must be an integer, got {validation_size!r}.")
    if not 0 <= validation_size < n:
        raise ValueError(
            f"`validation_size` must be in [0, {n}) for {n} training examples, "
            f"got {validation_size}."
        )


def check_pipeline_arguments(
    batch_size=128,
    train_limit=None,
    validation_limit=None,
    test_limit=None,
    crop_padding=4,
    mean=None,
    std=None,
    **_others,
) -> int:
    """Check the pipeline arguments that need no data (so a loader can check them
    before it reads anything); returns `batch_size` as an int.

    # Raises
        ValueError: naming the first bad argument.
    """
    batch_size = check_batch_size(batch_size)
    for arg, value in (
        ("train_limit", train_limit),
        ("validation_limit", validation_limit),
        ("test_limit", test_limit),
    ):
        check_limit(arg, value)
    if isinstance(crop_padding, bool) or not isinstance(crop_padding, int) or crop_padding < 0:
        raise ValueError(f"`crop_padding` must be a non-negative integer, got {crop_padding!r}.")
    if (mean is None) != (std is None):
        raise ValueError("`mean` and `std` must be given together.")
    if mean is not None:
        check_normalization(mean, std)
    return batch_size


def _finite_numbers(values: Any) -> bool:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        return False
    return len(values) > 0 and all(
        not isinstance(v, (bool, np.bool_)) and isinstance(v, (int, float, np.integer, np.floating))
        and math.isfinite(v) for v in values
    )


def check_normalization(mean: Any, std: Any) -> None:
    """`mean` and `std`: per-channel sequences of finite numbers, `std` positive.

    # Raises
        ValueError: naming the argument, for NaN or infinite values, strings, booleans,
            an empty or scalar value, or a `std` entry <= 0.
    """
    for arg, values in (("mean", mean), ("std", std)):
        if not _finite_numbers(values):
            raise ValueError(
                f"`{arg}` must be a sequence of finite numbers (one per channel, 0-1 "
                f"scale), got {values!r}."
            )
    if any(v <= 0 for v in std):
        raise ValueError(f"`std` must be positive, got {tuple(std)!r}.")


# -- split, preprocessing, batching -----------------------------------------------------


def split_train_validation(
    images: np.ndarray,
    labels: np.ndarray,
    validation_size: int,
    seed: int = 0,
    keep_classes: bool = False,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Carve a validation set out of a training set, deterministically for `seed`.

    With `keep_classes`, every class keeps at least one training example: a class the
    random draw would move entirely into validation gets one example back, swapped with
    one of a class that keeps several (the draw is unchanged when no class is emptied).

    # Arguments
        images, labels: the training set (same length).
        validation_size: how many random examples to hold out.
        seed: fixes which.
        keep_classes: `labels` are class indices, each of which must keep a training
            example (the classification loaders set it).

    # Returns
        `((train_images, train_labels), (validation_images, validation_labels))`.

    # Raises
        ValueError: if `validation_size` is negative or leaves no training example, or
            (`keep_classes`) fewer training examples than there are classes.
    """
    n = len(images)
    check_validation_size(validation_size, n)
    order = np.random.default_rng(seed).permutation(n)
    if validation_size and keep_classes:
        _keep_every_class(order, np.asarray(labels), validation_size)
    val, train = order[:validation_size], order[validation_size:]
    return (images[train], labels[train]), (images[val], labels[val])


def _keep_every_class(order: np.ndarray, labels: np.ndarray, validation_size: int) -> None:
    """Swap, in place, entries of `order` between its validation part (the first
    `validation_size`) and its training part so that every label keeps a training one."""
    if labels.ndim != 1:  # segmentation masks: no class per example
        return
    classes = np.unique(labels)
    n_train = len(order) - validation_size
    if n_train < len(classes):
        raise ValueError(
            f"`validation_size` {validation_size} leaves {n_train} training example(s) for "
            f"{len(classes)} classes; every class needs at least one: lower it to at most "
            f"{len(order) - len(classes)}."
        )
    train_counts = dict(zip(*np.unique(labels[order[validation_size:]], return_counts=True)))
    for label in classes:
        if train_counts.get(label, 0):
            continue
        v = next(i for i in range(validation_size) if labels[order[i]] == label)
        # The last training example of a class with several goes to validation instead.
        t = next(i for i in range(len(order) - 1, validation_size - 1, -1)
                 if train_counts[labels[order[i]]] > 1)
        train_counts[labels[order[t]]] -= 1
        train_counts[label] = 1
        order[v], order[t] = order[t], order[v]


def normalize_image(
    image: tf.Tensor, mean: Sequence[float], std: Sequence[float]
) -> tf.Tensor:
    """`(image - mean) / std`, per channel."""
    return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def pad_crop_flip(image: tf.Tensor, seed: tf.Tensor, padding: int, flip: bool) -> tf.Tensor:
    """Random crop after zero padding, then a random horizontal flip (stateless).

    # Arguments
        image: one `(height, width, channels)` image.
        seed: a stateless seed, shape `(2,)`.
        padding: zero pixels added on each side before cropping back to the input size
            (0 = no crop).
        flip: whether to flip left-right with probability 1/2.

    # Returns
        An image of the input's shape.
    """
    shape = tf.shape(image)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    if padding:
        padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
        image = tf.image.stateless_random_crop(padded, shape, seed=seeds[0])
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
    return image


def batch(ds: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
    """Batches of `batch_size` (the last one smaller), prefetched."""
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def train_pipeline(
    ds: tf.data.Dataset,
    size: int,
    batch_size: int,
    seed: int,
    augment_fn: Callable | None,
    preprocess: Callable,
    shuffle_buffer: int | None,
) -> tf.data.Dataset:
    """The batched training pipeline of `ds`.

    Shuffles (reshuffled every epoch, fixed by `seed`), augments with per-example
    stateless seeds (a fresh draw every epoch, also fixed by `seed`), preprocesses and
    batches.

    # Arguments
        ds: the training examples.
        size: how many there are.
        batch_size: examples per batch.
        seed: fixes the shuffling and the augmentation.
        augment_fn: `(example, seed) -> example`, or None for no augmentation.
        preprocess: applied to every example after augmentation.
        shuffle_buffer: examples in the shuffle buffer (None = all `size`).

    # Returns
        The batched, prefetched `tf.data.Dataset`.
    """
    ds = ds.shuffle(
        min(size, shuffle_buffer or size), seed=seed, reshuffle_each_iteration=True
    )
    if augment_fn is not None:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda example, s: augment_fn(example, s), num_parallel_calls=tf.data.AUTOTUNE
        )
    ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    return batch(ds, batch_size)


def array_pipelines(
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    batch_size: int,
    seed: int,
    preprocess: Callable,
    crop_padding: int | None,
    flip: bool,
) -> tuple[tf.data.Dataset, tf.data.Dataset, tf.data.Dataset]:
    """Batched train / validation / test pipelines of in-memory `(images, labels)` arrays.

    Training examples are shuffled and, if `crop_padding` is not None, augmented with
    `pad_crop_flip(image, seed, crop_padding, flip)` before `preprocess`; validation and
    test are only preprocessed.

    # Returns
        `(train, validation, test)` datasets.
    """

    def augment_fn(example, s):
        image, label = example
        return pad_crop_flip(image, s, crop_padding, flip), label

    train_ds = train_pipeline(
        tf.data.Dataset.from_tensor_slices(train),
        len(train[0]),
        batch_size,
        seed,
        None if crop_padding is None else augment_fn,
        preprocess,
        None,
    )

    def evaluation(arrays):
        ds = tf.data.Dataset.from_tensor_slices(arrays)
        return batch(ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE), batch_size)

    return train_ds, evaluation(validation), evaluation(test)
