"""Data sets read through tensorflow-datasets from a `data_dir` the user has prepared
(`tfds build ... --data_dir DIR`), never downloaded: the offline builder, the
train / validation / test pipelines of a prepared builder, and CIFAR-10 and ImageNet
(`imagenet2012`) on them. Missing data is a `FileNotFoundError` naming the directory
expected and how to prepare it."""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf

from pabt_tf.data.pipeline import (
    Datasets,
    batch,
    check_batch_size,
    check_limit,
    check_validation_size,
    fingerprint,
    normalize_image,
    pad_crop_flip,
    train_pipeline,
)

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "tfds_builder",
    "check_tfds_arguments",
    "tfds_datasets",
    "cifar10_tfds_datasets",
    "imagenet_datasets",
]

# Per-channel statistics of the training sets (pixel values in [0, 1]).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

_TFDS_NAMES = {
    "cifar10": "cifar10",
    "imagenet2012": "imagenet2012",
    "cityscapes": "cityscapes/semantic_segmentation",
}
_TFDS_HINTS = {
    "cifar10": "`tfds build cifar10 --data_dir {data_dir}` on a machine with internet, "
    "then copy {data_dir}/cifar10 here",
    "imagenet2012": "put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in "
    "{data_dir}/downloads/manual and run `tfds build imagenet2012 --data_dir {data_dir}`",
    "cityscapes": "put leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip in "
    "{data_dir}/downloads/manual and run "
    "`tfds build cityscapes/semantic_segmentation --data_dir {data_dir}`",
}


def tfds_builder(name: str, data_dir: str | None):
    """The tensorflow-datasets builder of an already *prepared* data set in `data_dir`.

    Never downloads: Google Cloud Storage access is switched off and a data set that is
    not prepared in `data_dir` is an error before anything else happens.

    # Arguments
        name: `"cifar10"`, `"imagenet2012"` or `"cityscapes"` (config
            `semantic_segmentation`).
        data_dir: the tfds data directory holding `<name>/<version>/`.

    # Returns
        The `tfds.core.DatasetBuilder`.

    # Raises
        ValueError: on an unknown name or a missing `data_dir`.
        FileNotFoundError: if the prepared data is not there (names the path expected
            and how to prepare it).
    """
    if name not in _TFDS_NAMES:
        raise ValueError(f"`name` must be one of {tuple(_TFDS_NAMES)}, got {name!r}.")
    if not data_dir:
        raise ValueError(
            f"`data_dir` is required for {name!r}: pabt_tf reads tensorflow-datasets data "
            "only from a directory you have prepared, it never downloads. "
            + _TFDS_HINTS[name].format(data_dir="DATA_DIR")
            + "."
        )
    # Imported on use: tensorflow_datasets takes seconds to import and only these sets
    # need it.
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.utils import gcs_utils

    gcs_utils._is_gcs_disabled = True  # no metadata or data from GCS, ever
    data_dir = os.path.abspath(os.path.expanduser(data_dir))
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(
            f"`data_dir` {data_dir} does not exist; expected a tensorflow-datasets data "
            f"directory with {_TFDS_NAMES[name]}/<version>/ in it. To prepare it: "
            + _TFDS_HINTS[name].format(data_dir=data_dir)
            + "."
        )
    builder = tfds.builder(_TFDS_NAMES[name], data_dir=data_dir, try_gcs=False)
    if not builder.is_prepared():
        root = os.path.join(data_dir, _TFDS_NAMES[name])
        found = sorted(os.listdir(root)) if os.path.isdir(root) else []
        raise FileNotFoundError(
            f"{name} is not prepared in data_dir {data_dir}: expected "
            f"{builder.data_path} with dataset_info.json and the record files of "
            f"version {builder.version}"
            + (f" (found only {found} in {root})" if found else "")
            + ". pabt_tf never downloads. To prepare it: "
            + _TFDS_HINTS[name].format(data_dir=data_dir)
            + "."
        )
    return builder


def check_tfds_arguments(batch_size: Any, validation_size: Any, train_limit: Any,
                         validation_limit: Any, test_limit: Any) -> int:
    """The checks every other layout makes, before a tfds directory is opened: a positive
    integer `batch_size`, an integer `validation_size` >= 0 (its upper bound needs the
    data), limits None or positive integers. Returns `batch_size` as an int.

    # Raises
        ValueError: naming the first bad argument.
    """
    batch_size = check_batch_size(batch_size)
    if isinstance(validation_size, bool) or not isinstance(validation_size, (int, np.integer)) or (
        validation_size < 0
    ):
        raise ValueError(f"`validation_size` must be an integer >= 0, got {validation_size!r}.")
    for arg, value in (("train_limit", train_limit), ("validation_limit", validation_limit),
                       ("test_limit", test_limit)):  # fmt: skip
        check_limit(arg, value)
    return batch_size


def _read(builder, split: str, shuffle: bool, seed: int, take: int | None = None):
    import tensorflow_datasets as tfds  # already imported by `tfds_builder`

    ds = builder.as_dataset(
        split=split,
        # An ordered data set (written with disable_shuffling) refuses shuffled files;
        # the pipeline shuffles examples anyway.
        shuffle_files=shuffle and not builder.info.disable_shuffling,
        read_config=tfds.ReadConfig(shuffle_seed=seed, try_autocache=False),
    )
    return ds.take(take) if take is not None else ds


def tfds_datasets(
    name: str,
    builder: Any,
    batch_size: int,
    validation_size: int,
    seed: int,
    train_limit: int | None,
    validation_limit: int | None,
    test_limit: int | None,
    test_split: str,
    train_fn: Callable,
    eval_fn: Callable,
    input_shape: Sequence[int],
    shuffle_buffer: int,
    num_classes: int | None = None,
) -> Datasets:
    """Train / validation / test pipelines of a prepared tfds builder.

    # Arguments
        name: the `Datasets.name`.
        builder: from `tfds_builder`.
        batch_size: examples per batch.
        validation_size: last examples of `train` held out for validation (0 = validate
            on `test_split`).
        seed: fixes the file and example shuffling and the augmentation.
        train_limit, validation_limit, test_limit: keep only the first examples of each.
        test_split: the tfds split used as the test set.
        train_fn: `(example, seed) -> (input, target)`, augmentation included.
        eval_fn: `example -> (input, target)` for validation and test.
        input_shape: the `Datasets.input_shape`.
        shuffle_buffer: training examples in the shuffle buffer.
        num_classes: default: the builder's `label` feature's.

    # Returns
        The `Datasets`.

    # Raises
        ValueError: on a bad `validation_size`.
    """
    batch_size = check_tfds_arguments(batch_size, validation_size, train_limit,
                                      validation_limit, test_limit)
    n = builder.info.splits["train"].num_examples
    check_validation_size(validation_size, n)
    n_train = n - validation_size
    train_split = f"train[:{n_train}]" if validation_size else "train"
    val_split = f"train[{n_train}:]" if validation_size else test_split
    n_val = validation_size or builder.info.splits[test_split].num_examples
    n_test = builder.info.splits[test_split].num_examples
    if train_limit is not None and train_limit < n_train:
        train_split, n_train = f"train[:{train_limit}]", train_limit
    take_val = None
    if validation_limit is not None and validation_limit < n_val:
        take_val = validation_limit
    n_val = take_val or n_val
    if test_limit is not None and test_limit < n_test:
        test_split, n_test = f"{test_split}[:{test_limit}]", test_limit

    raw = _read(builder, train_split, True, seed)
    # train_fn already maps examples to (input, target): nothing left to preprocess.
    train = train_pipeline(
        raw, n_train, batch_size, seed, train_fn, lambda x, y: (x, y), shuffle_buffer
    )

    def evaluation(ds):
        return batch(ds.map(eval_fn, num_parallel_calls=tf.data.AUTOTUNE), batch_size)

    label = builder.info.features["label"] if "label" in builder.info.features else None
    splits = sorted((k, v.num_examples, v.num_bytes) for k, v in builder.info.splits.items())
    return Datasets(
        train=train,
        validation=evaluation(_read(builder, val_split, False, seed, take_val)),
        test=evaluation(_read(builder, test_split, False, seed)),
        input_shape=tuple(input_shape),
        num_classes=num_classes or builder.info.features["label"].num_classes,
        train_size=n_train,
        validation_size=n_val,
        test_size=n_test,
        batch_size=batch_size,
        name=name,
        classes=tuple(getattr(label, "names", None) or ()),
        fingerprint=fingerprint(builder.info.full_name, splits),
    )


def cifar10_tfds_datasets(
    data_dir: str,
    batch_size: int = 128,
    validation_size: int = 0,
    augment: bool = True,
    seed: int = 0,
    train_limit: int | None = None,
    validation_limit: int | None = None,
    test_limit: int | None = None,
) -> Datasets:
    """CIFAR-10 pipelines from a prepared tfds `data_dir` (never downloads); see
    `pabt_tf.data.cifar10_datasets` for every offline layout.

    Training: random crop after 4-pixel zero padding and horizontal flip (the ResNet
    recipe), per-channel normalisation; evaluation: normalisation only.

    # Arguments
        data_dir: tfds data directory holding `cifar10/3.0.2/`.
        validation_size: last examples of `train` held out for validation (0 = validate
            on `test`, the usual CIFAR-10 protocol).
        Others: as in `fashion_mnist_datasets`.

    # Returns
        A `Datasets` of `(image float32 (32, 32, 3), label int32)` batches.

    # Raises
        ValueError / FileNotFoundError: see `tfds_builder`.
    """
    batch_size = check_tfds_arguments(batch_size, validation_size, train_limit,
                                      validation_limit, test_limit)
    builder = tfds_builder("cifar10", data_dir)

    def to_float(example):
        return tf.cast(example["image"], tf.float32) / 255.0, tf.cast(example["label"], tf.int32)

    def train_fn(example, s):
        image, label = to_float(example)
        if augment:
            image = pad_crop_flip(image, s, 4, True)
        return normalize_image(image, CIFAR10_MEAN, CIFAR10_STD), label

    def eval_fn(example):
        image, label = to_float(example)
        return normalize_image(image, CIFAR10_MEAN, CIFAR10_STD), label

    return tfds_datasets(
        "cifar10", builder, batch_size, validation_size, seed, train_limit,
        validation_limit, test_limit, "test", train_fn, eval_fn, (32, 32, 3), 50_000,
    )  # fmt: skip


def imagenet_datasets(
    data_dir: str,
    batch_size: int = 256,
    image_size: int = 224,
    validation_size: int = 0,
    augment: bool = True,
    seed: int = 0,
    train_limit: int | None = None,
    validation_limit: int | None = None,
    test_limit: int | None = None,
    shuffle_buffer: int = 10_000,
) -> Datasets:
    """ImageNet (ILSVRC 2012) pipelines from a prepared tfds `data_dir` (never downloads).

    Training: random resized crop (scale 0.08–1, aspect 3/4–4/3) to `image_size` and
    horizontal flip; evaluation: resize the short side to `image_size / 0.875`, central
    crop. ImageNet normalisation. The test set is tfds' `validation` split (the 50 000
    images every paper reports on).

    # Arguments
        data_dir: tfds data directory holding `imagenet2012/5.1.0/`.
        image_size: side of the square images the model sees.
        validation_size: last examples of `train` held out for validation
            (0 = validate on the test set).
        shuffle_buffer: training examples in the shuffle buffer.
        Others: as in `fashion_mnist_datasets`.

    # Returns
        A `Datasets` of `(image float32 (image_size, image_size, 3), label int32)` batches.

    # Raises
        ValueError / FileNotFoundError: see `tfds_builder`.
    """
    batch_size = check_tfds_arguments(batch_size, validation_size, train_limit,
                                      validation_limit, test_limit)
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ValueError(f"`image_size` must be a positive integer, got {image_size!r}.")
    builder = tfds_builder("imagenet2012", data_dir)

    def train_fn(example, s):
        image = example["image"]
        if augment:
            begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
                tf.shape(image),
                bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
                seed=s,
                min_object_covered=0.0,
                aspect_ratio_range=(3 / 4, 4 / 3),
                area_range=(0.08, 1.0),
                use_image_if_no_bounding_boxes=True,
            )
            image = tf.slice(image, begin, size)
            image = tf.image.stateless_random_flip_left_right(image, seed=s)
            image = tf.image.resize(image, (image_size, image_size))
        else:
            image = _center_crop(image, image_size)
        image = normalize_image(tf.cast(image, tf.float32) / 255.0, IMAGENET_MEAN, IMAGENET_STD)
        return image, tf.cast(example["label"], tf.int32)

    def eval_fn(example):
        image = normalize_image(
            _center_crop(example["image"], image_size) / 255.0, IMAGENET_MEAN, IMAGENET_STD
        )
        return image, tf.cast(example["label"], tf.int32)

    return tfds_datasets(
        "imagenet2012", builder, batch_size, validation_size, seed, train_limit,
        validation_limit, test_limit, "validation", train_fn, eval_fn,
        (image_size, image_size, 3), shuffle_buffer,
    )  # fmt: skip


def _center_crop(image: tf.Tensor, size: int, ratio: float = 0.875) -> tf.Tensor:
    """Resize the short side to `size / ratio`, then crop the central `size` square."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = (size / ratio) / tf.reduce_min(shape)
    resized = tf.image.resize(image, tf.cast(tf.round(shape * scale), tf.int32))
    return tf.image.resize_with_crop_or_pad(resized, size, size)
