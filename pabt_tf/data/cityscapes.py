"""Cityscapes semantic segmentation (fine labels, the 19 classes of the benchmark) from a
prepared tensorflow-datasets `data_dir`: the label-id to train-id table, the ignore
label, and the pipelines (resize, random scale / crop / flip of image and label
together)."""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from pabt_tf.data.pipeline import Datasets, check_batch_size, normalize_image
from pabt_tf.data.tfds_sets import IMAGENET_MEAN, IMAGENET_STD, tfds_builder, tfds_datasets

__all__ = ["CITYSCAPES_IGNORE_LABEL", "CITYSCAPES_TRAIN_IDS", "cityscapes_datasets"]

CITYSCAPES_IGNORE_LABEL = 255
"""The target of pixels outside the 19 classes: give it to the loss as `ignore_class`."""

# Cityscapes label ids (0..33, as stored by tfds' gtFine_labelIds; the table covers every
# uint8 value) -> the 19 train ids of the benchmark; everything else is ignored.
CITYSCAPES_TRAIN_IDS = np.full(256, CITYSCAPES_IGNORE_LABEL, np.int32)
for _label_id, _train_id in {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}.items():  # fmt: skip
    CITYSCAPES_TRAIN_IDS[_label_id] = _train_id
del _label_id, _train_id

_NUM_CLASSES = 19


def cityscapes_datasets(
    data_dir: str,
    batch_size: int = 8,
    image_size: tuple[int, int] = (512, 1024),
    crop_size: tuple[int, int] | None = None,
    validation_size: int = 0,
    augment: bool = True,
    seed: int = 0,
    train_limit: int | None = None,
    validation_limit: int | None = None,
    test_limit: int | None = None,
) -> Datasets:
    """Cityscapes semantic segmentation (fine labels, 19 classes) from a prepared tfds
    `data_dir` (never downloads).

    Images are resized to `image_size` (labels with nearest neighbour); training adds a
    random scale in [0.75, 1.25], a random `crop_size` crop (default `image_size`) and a
    horizontal flip. Labels are train ids 0..18, `CITYSCAPES_IGNORE_LABEL` (255) =
    ignore (use `SparseCategoricalCrossentropy(ignore_class=CITYSCAPES_IGNORE_LABEL)`).
    The test set is tfds' `validation` split (the `test` split has no public labels).

    # Arguments
        data_dir: tfds data directory holding `cityscapes/semantic_segmentation/1.0.0/`.
        image_size: `(height, width)` every image is resized to.
        crop_size: `(height, width)` of the training crops, no larger than `image_size`.
        Others: as in `cifar10_datasets`.

    # Returns
        A `Datasets` of `(image float32 (h, w, 3), train ids int32 (h, w))` batches.

    # Raises
        ValueError: on a bad `crop_size`; ValueError / FileNotFoundError: see
            `tfds_builder`.
    """
    batch_size = check_batch_size(batch_size)
    image_size = tuple(int(s) for s in image_size)
    crop_size = tuple(int(s) for s in (crop_size or image_size))
    if len(image_size) != 2 or len(crop_size) != 2 or any(
        c > s for c, s in zip(crop_size, image_size)
    ):
        raise ValueError(
            f"`crop_size` {crop_size} must be two sizes no larger than `image_size` {image_size}."
        )
    builder = tfds_builder("cityscapes", data_dir)
    table = tf.constant(CITYSCAPES_TRAIN_IDS)

    def decode(example, size):
        image = tf.image.resize(tf.cast(example["image_left"], tf.float32) / 255.0, size)
        label = tf.image.resize(example["segmentation_label"], size, method="nearest")
        label = tf.gather(table, tf.cast(label[..., 0], tf.int32))
        return image, label

    def train_fn(example, s):
        size = image_size
        if augment:
            scale = tf.random.stateless_uniform([], s, 0.75, 1.25)
            size = tf.maximum(
                tf.cast(tf.round(scale * tf.constant(image_size, tf.float32)), tf.int32),
                tf.constant(crop_size),
            )
        image, label = decode(example, size)
        if augment:
            # Image and label as one tensor, so that both get the same crop and flip.
            both = tf.concat([image, tf.cast(label[..., None], tf.float32)], -1)
            seeds = tf.random.experimental.stateless_split(s, 2)
            both = tf.image.stateless_random_crop(both, [*crop_size, 4], seed=seeds[0])
            both = tf.image.stateless_random_flip_left_right(both, seed=seeds[1])
            image, label = both[..., :3], tf.cast(both[..., 3], tf.int32)
        image.set_shape([*crop_size, 3])
        label.set_shape(crop_size)
        return normalize_image(image, IMAGENET_MEAN, IMAGENET_STD), label

    def eval_fn(example):
        image, label = decode(example, image_size)
        return normalize_image(image, IMAGENET_MEAN, IMAGENET_STD), label

    datasets = tfds_datasets(
        "cityscapes", builder, batch_size, validation_size, seed, train_limit,
        validation_limit, test_limit, "validation", train_fn, eval_fn,
        (*crop_size, 3), 500, num_classes=_NUM_CLASSES,
    )  # fmt: skip
    return dataclasses.replace(datasets, task="segmentation", ignore_label=CITYSCAPES_IGNORE_LABEL)
