"""Fashion-MNIST from the IDX files of Debian's `dataset-fashion-mnist` package: reading
and checking the files, and the train / validation / test pipelines built on them.

The folder is `data_dir` if given, else `$PABT_FASHION_MNIST_DIR` read at load time
(`fashion_mnist_dir()`), else `FASHION_MNIST_DEFAULT_DIR`.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib

import numpy as np

from pabt_tf.data.pipeline import (
    Datasets,
    array_pipelines,
    check_limit,
    check_pipeline_arguments,
    fingerprint,
    normalize_image,
    split_train_validation,
)

__all__ = [
    "FASHION_MNIST_DEFAULT_DIR",
    "FASHION_MNIST_DIR_VARIABLE",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "fashion_mnist_dir",
    "read_idx",
    "MAX_IDX_BYTES",
    "load_fashion_mnist",
    "fashion_mnist_datasets",
]

FASHION_MNIST_DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
"""Where Debian's `dataset-fashion-mnist` installs the four IDX files; used when neither
`data_dir` nor `$PABT_FASHION_MNIST_DIR` says otherwise."""

FASHION_MNIST_DIR_VARIABLE = "PABT_FASHION_MNIST_DIR"
"""The environment variable naming another folder with the IDX files."""

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

# Statistics of the training set (pixel values in [0, 1]).
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)

_IMAGE_SIZE = (28, 28)
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MAX_IDX_BYTES = 2**31
"""The most data bytes `read_idx` accepts from one file's header (2 GiB; Fashion-MNIST's
training images are 47 MB), so a corrupt header or a gzip bomb fails instead of filling
memory."""

# IDX type byte -> numpy dtype (multi-byte values are big-endian).
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def fashion_mnist_dir() -> str:
    """The folder the IDX files are read from when no `data_dir` is given.

    Read on every call, so setting `$PABT_FASHION_MNIST_DIR` after importing pabt_tf
    takes effect.

    # Returns
        `$PABT_FASHION_MNIST_DIR` if set and not empty, else `FASHION_MNIST_DEFAULT_DIR`.
    """
    return os.environ.get(FASHION_MNIST_DIR_VARIABLE) or FASHION_MNIST_DEFAULT_DIR


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array.

    # Arguments
        path: the file; a name ending in `.gz` is decompressed.

    # Returns
        The array, of the shape and type the file's header declares.

    # Raises
        ValueError: naming `path`, if the file is not a valid IDX file: bad magic number,
            unknown type, truncated header, a data size other than the header's shape
            implies (truncated or trailing bytes), or a declared size above
            `MAX_IDX_BYTES`; or a `.gz` file that is not complete gzip data.
    """
    opener = gzip.open if path.endswith(".gz") else open
    try:
        # Read the header first and then only the bytes it declares (plus one to detect
        # trailing data): a gzip bomb never inflates past MAX_IDX_BYTES.
        with opener(path, "rb") as f:
            magic = f.read(4)
            if len(magic) < 4:
                raise ValueError(
                    f"{path} is not an IDX file: {len(magic)} bytes, shorter than the 4-byte "
                    "magic number."
                )
            if magic[0] != 0 or magic[1] != 0:
                raise ValueError(f"{path} is not an IDX file (bad magic number).")
            dtype = _IDX_TYPES.get(magic[2])
            if dtype is None:
                raise ValueError(f"{path}: unknown IDX data type 0x{magic[2]:02x}.")
            ndim = magic[3]
            dims = f.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise ValueError(
                    f"{path}: truncated IDX header: {ndim} dimensions need {4 + 4 * ndim} "
                    f"bytes, the file has {4 + len(dims)}."
                )
            shape = struct.unpack(f">{ndim}I", dims)
            count = math.prod(shape)
            expected = count * np.dtype(dtype).itemsize
            if expected > MAX_IDX_BYTES:
                raise ValueError(
                    f"{path}: the header declares shape {shape} of {np.dtype(dtype).name}, "
                    f"{expected} bytes of data, more than MAX_IDX_BYTES = {MAX_IDX_BYTES} "
                    "(raise pabt_tf.data.fashion_mnist.MAX_IDX_BYTES for a larger file)."
                )
            data = f.read(expected)
            trailing = len(f.read(1))
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        # gzip's own messages do not say which file.
        raise ValueError(f"{path} is not complete gzip data: {err}") from err
    if len(data) != expected or trailing:
        found = f"{len(data)}" if not trailing else f"more than {expected}"
        raise ValueError(
            f"{path}: the header declares shape {shape} of {np.dtype(dtype).name}, "
            f"{count} values = {expected} bytes of data; the file has {found} "
            "(truncated or corrupt)."
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _find(directory: str, stem: str, source: str) -> str:
    for name in (stem + ".gz", stem):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}(.gz) not found in {directory} ({source}). Install "
        "Debian's package: `sudo apt-get install dataset-fashion-mnist` (or point "
        f"{FASHION_MNIST_DIR_VARIABLE} / `data_dir` at a folder with the four IDX files)."
    )


def _check_images_and_labels(
    images: np.ndarray, labels: np.ndarray, images_path: str, labels_path: str
) -> None:
    """Fail on files that read as IDX but are not Fashion-MNIST images and labels."""
    if images.dtype != np.uint8 or images.shape[1:] != _IMAGE_SIZE:
        raise ValueError(
            f"{images_path}: expected Fashion-MNIST images, uint8 of shape "
            f"(n, {_IMAGE_SIZE[0]}, {_IMAGE_SIZE[1]}); found {images.dtype.name} {images.shape}."
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(
            f"{labels_path}: expected Fashion-MNIST labels, uint8 of shape (n,); "
            f"found {labels.dtype.name} {labels.shape}."
        )
    if len(images) != len(labels):
        raise ValueError(
            f"{images_path} holds {len(images)} images but {labels_path} holds "
            f"{len(labels)} labels; expected one label per image."
        )
    if len(labels) and labels.max() >= len(FASHION_MNIST_CLASSES):
        raise ValueError(
            f"{labels_path}: expected labels 0..{len(FASHION_MNIST_CLASSES) - 1}, "
            f"found {labels.max()}."
        )


def load_fashion_mnist(
    split: str = "train", limit: int | None = None, data_dir: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images and labels as numpy arrays.

    # Arguments
        split: `"train"` (60 000 images) or `"test"` (10 000).
        limit: keep only the first `limit` examples.
        data_dir: folder with the IDX files (default: `fashion_mnist_dir()`).

    # Returns
        `(images, labels)`: float32 `(n, 28, 28, 1)` scaled to [0, 1], int32 `(n,)`.

    # Raises
        ValueError: on an unknown split or a bad limit; on malformed files, or images
            and labels that disagree (names the file and what was expected).
        FileNotFoundError: if the data is not installed (names the Debian package).
    """
    if split not in _FILES:
        raise ValueError(f"`split` must be one of {tuple(_FILES)}, got {split!r}.")
    check_limit("limit", limit)
    if data_dir:
        directory, source = data_dir, "`data_dir`"
    else:
        directory = fashion_mnist_dir()
        source = (
            f"${FASHION_MNIST_DIR_VARIABLE}"
            if os.environ.get(FASHION_MNIST_DIR_VARIABLE)
            else f"the default; ${FASHION_MNIST_DIR_VARIABLE} is not set"
        )
    images_path, labels_path = (_find(directory, stem, source) for stem in _FILES[split])
    images, labels = read_idx(images_path), read_idx(labels_path)
    _check_images_and_labels(images, labels, images_path, labels_path)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    images = images.astype(np.float32)[..., None] / 255.0
    return images, labels.astype(np.int32)


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
        data_dir: folder with the IDX files (default: `fashion_mnist_dir()`).

    # Returns
        A `Datasets` of `(image float32 (28, 28, 1), label int32)` batches.

    # Raises
        ValueError: on a bad argument or malformed files; FileNotFoundError: if the data
            is not installed.
    """
    batch_size = check_pipeline_arguments(
        batch_size, train_limit, validation_limit, test_limit, crop_padding
    )
    x, y = load_fashion_mnist("train", data_dir=data_dir)
    x_test, y_test = load_fashion_mnist("test", limit=test_limit, data_dir=data_dir)
    (x_train, y_train), (x_val, y_val) = split_train_validation(x, y, validation_size, seed, keep_classes=True)
    if validation_size == 0:
        x_val, y_val = x_test, y_test
    x_train, y_train = x_train[:train_limit], y_train[:train_limit]
    x_val, y_val = x_val[:validation_limit], y_val[:validation_limit]

    mean, std = (FASHION_MNIST_MEAN, FASHION_MNIST_STD) if normalize else ((0.0,), (1.0,))

    def preprocess(image, label):
        return normalize_image(image, mean, std), label

    train, validation, test = array_pipelines(
        (x_train, y_train), (x_val, y_val), (x_test, y_test), batch_size, seed, preprocess,
        crop_padding if augment else None, flip,
    )  # fmt: skip

    return Datasets(
        train=train,
        validation=validation,
        test=test,
        input_shape=(*_IMAGE_SIZE, 1),
        num_classes=len(FASHION_MNIST_CLASSES),
        train_size=len(x_train),
        validation_size=len(x_val),
        test_size=len(x_test),
        batch_size=batch_size,
        name="fashion_mnist",
        classes=FASHION_MNIST_CLASSES,
        fingerprint=fingerprint(x, y, x_test, y_test),
    )
