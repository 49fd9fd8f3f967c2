"""Data sets as `tf.data` pipelines, all offline.

- Fashion-MNIST from Debian's `dataset-fashion-mnist` package: `load_fashion_mnist` reads
  the four IDX files it installs under `/usr/share/datasets/fashion-mnist/`;
  `fashion_mnist_datasets` turns them into train / validation / test pipelines
  (augmentation, normalisation, a validation split carved from train by seed, batching).
- CIFAR-10, ImageNet (`imagenet2012`) and Cityscapes (`cityscapes`, config
  `semantic_segmentation`) through tensorflow-datasets, read **only** from a `data_dir`
  the user has already prepared (`tfds build ... --data_dir DIR`). Nothing is ever
  downloaded: missing data is a `FileNotFoundError` naming the directory expected.

`load_datasets(name, ...)` dispatches on the data set name.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import struct
from typing import Any, Callable

import numpy as np
import tensorflow as tf

__all__ = [
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_CLASSES",
    "DATASETS",
    "Datasets",
    "load_fashion_mnist",
    "read_idx",
    "split_train_validation",
    "fashion_mnist_datasets",
    "tfds_builder",
    "cifar10_datasets",
    "imagenet_datasets",
    "cityscapes_datasets",
    "load_datasets",
    "CITYSCAPES_TRAIN_IDS",
]

FASHION_MNIST_DIR = os.environ.get(
    "PABT_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"
)
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

# Per-channel statistics of the training sets (pixel values in [0, 1]).
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

DATASETS = ("fashion_mnist", "cifar10", "imagenet2012", "cityscapes")


# -- Fashion-MNIST (IDX files) ---------------------------------------------------------


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array.

    # Raises
        ValueError: if the file is not a valid IDX file.
    """
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number).")
    dtype = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}.get(
        data[2]
    )
    if dtype is None:
        raise ValueError(f"{path}: unknown IDX data type 0x{data[2]:02x}.")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path}: expected {int(np.prod(shape))} values, found {array.size}.")
    return array.reshape(shape)


def _find(directory: str, stem: str) -> str:
    for name in (stem + ".gz", stem):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}(.gz) not found in {directory}. Install Debian's "
        "package: `sudo apt-get install dataset-fashion-mnist` (or point "
        "PABT_FASHION_MNIST_DIR / `data_dir` at a folder with the four IDX files)."
    )


def _check_limit(name: str, value: Any) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1
    ):
        raise ValueError(f"`{name}` must be a positive integer or None, got {value!r}.")


def load_fashion_mnist(
    split: str = "train", limit: int | None = None, data_dir: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images and labels as numpy arrays.

    # Arguments
        split: `"train"` (60 000 images) or `"test"` (10 000).
        limit: keep only the first `limit` examples.
        data_dir: folder with the IDX files (default: Debian's location).

    # Returns
        `(images, labels)`: float32 `(n, 28, 28, 1)` scaled to [0, 1], int32 `(n,)`.

    # Raises
        ValueError: on an unknown split or a bad limit.
        FileNotFoundError: if the data is not installed (names the Debian package).
    """
    if split not in _FILES:
        raise ValueError(f"`split` must be one of {tuple(_FILES)}, got {split!r}.")
    _check_limit("limit", limit)
    directory = data_dir or FASHION_MNIST_DIR
    images = read_idx(_find(directory, _FILES[split][0]))
    labels = read_idx(_find(directory, _FILES[split][1]))
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    images = images.astype(np.float32)[..., None] / 255.0
    return images, labels.astype(np.int32)


# -- pipelines -------------------------------------------------------------------------


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

    @property
    def steps_per_epoch(self) -> int:
        """Training batches per epoch (the last, smaller batch included)."""
        return -(-self.train_size // self.batch_size)


def split_train_validation(
    images: np.ndarray, labels: np.ndarray, validation_size: int, seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Carve a validation set out of a training set, deterministically for `seed`.

    # Returns
        `((train_images, train_labels), (validation_images, validation_labels))`.

    # Raises
        ValueError: if `validation_size` is negative or leaves no training example.
    """
    n = len(images)
    if isinstance(validation_size, bool) or not isinstance(validation_size, (int, np.integer)):
        raise ValueError(f"`validation_size` must be an integer, got {validation_size!r}.")
    if not 0 <= validation_size < n:
        raise ValueError(
            f"`validation_size` must be in [0, {n}) for {n} training examples, "
            f"got {validation_size}."
        )
    order = np.random.default_rng(seed).permutation(n)
    val, train = order[:validation_size], order[validation_size:]
    return (images[train], labels[train]), (images[val], labels[val])


def _check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
    return int(batch_size)


def _normalize(image: tf.Tensor, mean, std) -> tf.Tensor:
    return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def _pad_crop_flip(image: tf.Tensor, seed: tf.Tensor, padding: int, flip: bool) -> tf.Tensor:
    """Random crop after zero padding, then a random horizontal flip (stateless)."""
    shape = tf.shape(image)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    if padding:
        padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
        image = tf.image.stateless_random_crop(padded, shape, seed=seeds[0])
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
    return image


def _finish(ds: tf.data.Dataset, batch_size: int, drop_remainder: bool = False):
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def _train_pipeline(
    ds: tf.data.Dataset,
    size: int,
    batch_size: int,
    seed: int,
    augment_fn: Callable | None,
    preprocess: Callable,
    shuffle_buffer: int | None,
) -> tf.data.Dataset:
    """Shuffle (reshuffled every epoch, fixed by `seed`), augment with per-example
    stateless seeds (a fresh draw every epoch, also fixed by `seed`), preprocess, batch."""
    ds = ds.shuffle(
        min(size, shuffle_buffer or size), seed=seed, reshuffle_each_iteration=True
    )
    if augment_fn is not None:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda example, s: augment_fn(example, s), num_parallel_calls=tf.data.AUTOTUNE
        )
    ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    return _finish(ds, batch_size)


def fashion_mnist_datasets(
    batch_size: int = 128,
    validation_size: int = 5000,
    augment: bool = True,
    seed: int = 0,
    train_limit: int | None = None,
    validation_limit: int | None = None,
    test_limit: int | None = None,
    normalize: bool = True,
    crop_padding: int = 2,
    flip: bool = True,
    data_dir: str | None = None,
) -> Datasets:
    """Fashion-MNIST train / validation / test pipelines from the IDX files.

    # Arguments
        batch_size: examples per batch.
        validation_size: examples carved from the 60 000 training images for validation
            (a random subset fixed by `seed`; 0 = use the test set for validation).
        augment: random crop after `crop_padding` zero pixels on each side and random
            horizontal flip, training set only.
        seed: fixes the validation split, the shuffling and the augmentation.
        train_limit, validation_limit, test_limit: keep only the first examples of each
            (after the split) — for quick runs.
        normalize: subtract the training mean and divide by its std (else [0, 1]).
        crop_padding, flip: the augmentation.
        data_dir: folder with the IDX files (default: Debian's location).

    # Returns
        A `Datasets` of `(image float32 (28, 28, 1), label int32)` batches.

    # Raises
        ValueError: on a bad argument; FileNotFoundError: if the data is not installed.
    """
    batch_size = _check_batch_size(batch_size)
    for name, value in (
        ("train_limit", train_limit),
        ("validation_limit", validation_limit),
        ("test_limit", test_limit),
    ):
        _check_limit(name, value)
    if isinstance(crop_padding, bool) or not isinstance(crop_padding, int) or crop_padding < 0:
        raise ValueError(f"`crop_padding` must be a non-negative integer, got {crop_padding!r}.")
    x, y = load_fashion_mnist("train", data_dir=data_dir)
    x_test, y_test = load_fashion_mnist("test", limit=test_limit, data_dir=data_dir)
    (x_train, y_train), (x_val, y_val) = split_train_validation(x, y, validation_size, seed)
    if validation_size == 0:
        x_val, y_val = x_test, y_test
    x_train, y_train = x_train[:train_limit], y_train[:train_limit]
    x_val, y_val = x_val[:validation_limit], y_val[:validation_limit]

    mean, std = (FASHION_MNIST_MEAN, FASHION_MNIST_STD) if normalize else ((0.0,), (1.0,))

    def preprocess(image, label):
        return _normalize(image, mean, std), label

    def augment_fn(example, s):
        image, label = example
        return _pad_crop_flip(image, s, crop_padding, flip), label

    train = _train_pipeline(
        tf.data.Dataset.from_tensor_slices((x_train, y_train)),
        len(x_train),
        batch_size,
        seed,
        augment_fn if augment else None,
        preprocess,
        None,
    )

    def evaluation(xs, ys):
        ds = tf.data.Dataset.from_tensor_slices((xs, ys))
        return _finish(ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE), batch_size)

    return Datasets(
        train=train,
        validation=evaluation(x_val, y_val),
        test=evaluation(x_test, y_test),
        input_shape=(28, 28, 1),
        num_classes=10,
        train_size=len(x_train),
        validation_size=len(x_val),
        test_size=len(x_test),
        batch_size=batch_size,
        name="fashion_mnist",
    )


# -- tensorflow-datasets from a user's data_dir ---------------------------------------

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


def _split_sizes(builder, validation_size: int, train_split: str = "train"):
    n = builder.info.splits[train_split].num_examples
    if isinstance(validation_size, bool) or not isinstance(validation_size, (int, np.integer)):
        raise ValueError(f"`validation_size` must be an integer, got {validation_size!r}.")
    if not 0 <= validation_size < n:
        raise ValueError(
            f"`validation_size` must be in [0, {n}) for {n} training examples, "
            f"got {validation_size}."
        )
    return n


def _tfds_read(builder, split: str, shuffle: bool, seed: int, take: int | None = None):
    import tensorflow_datasets as tfds

    ds = builder.as_dataset(
        split=split,
        # An ordered data set (written with disable_shuffling) refuses shuffled files;
        # the pipeline shuffles examples anyway.
        shuffle_files=shuffle and not builder.info.disable_shuffling,
        read_config=tfds.ReadConfig(shuffle_seed=seed, try_autocache=False),
    )
    return ds.take(take) if take is not None else ds


def _classification_datasets(
    name: str,
    builder,
    batch_size: int,
    validation_size: int,
    seed: int,
    train_limit,
    validation_limit,
    test_limit,
    test_split: str,
    train_fn: Callable,
    eval_fn: Callable,
    input_shape,
    shuffle_buffer: int,
    num_classes: int | None = None,
) -> Datasets:
    n = _split_sizes(builder, validation_size)
    n_train = n - validation_size
    train_split = f"train[:{n_train}]" if validation_size else "train"
    val_split = f"train[{n_train}:]" if validation_size else test_split
    n_val = validation_size or builder.info.splits[test_split].num_examples
    n_test = builder.info.splits[test_split].num_examples
    if train_limit is not None and train_limit < n_train:
        train_split, n_train = f"train[:{train_limit}]", train_limit
    take_val = validation_limit if validation_limit is not None and validation_limit < n_val else None
    n_val = take_val or n_val
    if test_limit is not None and test_limit < n_test:
        test_split, n_test = f"{test_split}[:{test_limit}]", test_limit

    raw = _tfds_read(builder, train_split, True, seed)
    train = _train_pipeline(raw, n_train, batch_size, seed, train_fn, lambda x, y: (x, y), shuffle_buffer)
    evaluation = lambda ds: _finish(ds.map(eval_fn, num_parallel_calls=tf.data.AUTOTUNE), batch_size)
    return Datasets(
        train=train,
        validation=evaluation(_tfds_read(builder, val_split, False, seed, take_val)),
        test=evaluation(_tfds_read(builder, test_split, False, seed)),
        input_shape=tuple(input_shape),
        num_classes=num_classes or builder.info.features["label"].num_classes,
        train_size=n_train,
        validation_size=n_val,
        test_size=n_test,
        batch_size=batch_size,
        name=name,
    )


def cifar10_datasets(
    data_dir: str,
    batch_size: int = 128,
    validation_size: int = 0,
    augment: bool = True,
    seed: int = 0,
    train_limit: int | None = None,
    validation_limit: int | None = None,
    test_limit: int | None = None,
) -> Datasets:
    """CIFAR-10 pipelines from a prepared tfds `data_dir` (never downloads).

    Training: random crop after 4-pixel zero padding and horizontal flip (the ResNet
    recipe), per-channel normalisation; evaluation: normalisation only.

    # Arguments
        data_dir: tfds data directory holding `cifar10/3.0.2/`.
        validation_size: last examples of `train` held out for validation (0 = validate
            on `test`, the usual CIFAR-10 protocol).
        Others: as in `fashion_mnist_datasets`.

    # Raises
        ValueError / FileNotFoundError: see `tfds_builder`.
    """
    batch_size = _check_batch_size(batch_size)
    builder = tfds_builder("cifar10", data_dir)

    def to_float(example):
        return tf.cast(example["image"], tf.float32) / 255.0, tf.cast(example["label"], tf.int32)

    def train_fn(example, s):
        image, label = to_float(example)
        if augment:
            image = _pad_crop_flip(image, s, 4, True)
        return _normalize(image, CIFAR10_MEAN, CIFAR10_STD), label

    def eval_fn(example):
        image, label = to_float(example)
        return _normalize(image, CIFAR10_MEAN, CIFAR10_STD), label

    return _classification_datasets(
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
        validation_size: last examples of `train` held out for validation
            (0 = validate on the test set).

    # Raises
        ValueError / FileNotFoundError: see `tfds_builder`.
    """
    batch_size = _check_batch_size(batch_size)
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
        image = _normalize(tf.cast(image, tf.float32) / 255.0, IMAGENET_MEAN, IMAGENET_STD)
        return image, tf.cast(example["label"], tf.int32)

    def eval_fn(example):
        image = _normalize(_center_crop(example["image"], image_size) / 255.0, IMAGENET_MEAN, IMAGENET_STD)
        return image, tf.cast(example["label"], tf.int32)

    return _classification_datasets(
        "imagenet2012", builder, batch_size, validation_size, seed, train_limit,
        validation_limit, test_limit, "validation", train_fn, eval_fn,
        (image_size, image_size, 3), shuffle_buffer,
    )  # fmt: skip


def _center_crop(image: tf.Tensor, size: int, ratio: float = 0.875) -> tf.Tensor:
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = (size / ratio) / tf.reduce_min(shape)
    resized = tf.image.resize(image, tf.cast(tf.round(shape * scale), tf.int32))
    return tf.image.resize_with_crop_or_pad(resized, size, size)


# Cityscapes label ids (0..33, as stored by tfds' gtFine_labelIds) -> the 19 train ids
# of the benchmark; everything else is 255 ("ignore").
CITYSCAPES_TRAIN_IDS = np.full(256, 255, np.int32)
for _label_id, _train_id in {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}.items():  # fmt: skip
    CITYSCAPES_TRAIN_IDS[_label_id] = _train_id
CITYSCAPES_IGNORE_LABEL = 255


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
    horizontal flip. Labels are train ids 0..18, 255 = ignore (use
    `SparseCategoricalCrossentropy(ignore_class=255)`). The test set is tfds'
    `validation` split (the `test` split has no public labels).

    # Arguments
        data_dir: tfds data directory holding `cityscapes/semantic_segmentation/1.0.0/`.

    # Raises
        ValueError / FileNotFoundError: see `tfds_builder`.
    """
    batch_size = _check_batch_size(batch_size)
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
            both = tf.concat([image, tf.cast(label[..., None], tf.float32)], -1)
            seeds = tf.random.experimental.stateless_split(s, 2)
            both = tf.image.stateless_random_crop(both, [*crop_size, 4], seed=seeds[0])
            both = tf.image.stateless_random_flip_left_right(both, seed=seeds[1])
            image, label = both[..., :3], tf.cast(both[..., 3], tf.int32)
        image.set_shape([*crop_size, 3])
        label.set_shape(crop_size)
        return _normalize(image, IMAGENET_MEAN, IMAGENET_STD), label

    def eval_fn(example):
        image, label = decode(example, image_size)
        return _normalize(image, IMAGENET_MEAN, IMAGENET_STD), label

    datasets = _classification_datasets(
        "cityscapes", builder, batch_size, validation_size, seed, train_limit,
        validation_limit, test_limit, "validation", train_fn, eval_fn,
        (*crop_size, 3), 500, num_classes=19,
    )  # fmt: skip
    return datasets


def load_datasets(name: str, data_dir: str | None = None, **kwargs) -> Datasets:
    """Dispatch to `<name>_datasets`: `"fashion_mnist"` (IDX files; `data_dir` optional),
    `"cifar10"`, `"imagenet2012"`, `"cityscapes"` (tfds, `data_dir` required).

    # Raises
        ValueError: on an unknown name.
    """
    if name == "fashion_mnist":
        return fashion_mnist_datasets(data_dir=data_dir, **kwargs)
    loaders = {
        "cifar10": cifar10_datasets,
        "imagenet2012": imagenet_datasets,
        "cityscapes": cityscapes_datasets,
    }
    if name not in loaders:
        raise ValueError(f"`name` must be one of {DATASETS}, got {name!r}.")
    return loaders[name](data_dir, **kwargs)
