"""Image classification data held in memory as uint8 arrays: a class-folder tree (the
layout `tf.keras.utils.image_dataset_from_directory` reads) and the train / validation /
test pipelines built on such arrays (`pabt_tf.data.cifar10` reads CIFAR-10's pickles into
the same arrays).

Every image is decoded once per process (the arrays are kept, keyed by the files' names,
sizes and modification times) and stays uint8 until a batch is made. Nothing is ever
written into the data directory. Bad input — a missing folder, no class folders, an empty
class, a file that is not a decodable image or not a regular file, an image declaring
more than `MAX_PIXELS` pixels (checked from its header), images too many and too large
for the machine's memory (checked from the first image's header), a symbolic link loop,
images of different sizes, fewer than two classes, train and test class lists that
differ — is an error naming the path, raised before any pipeline exists. Links to folders
are followed. A JPEG's EXIF orientation is applied (its pixels upright, as PIL's
`ImageOps.exif_transpose` shows them); other formats' is not read.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from typing import Sequence

import numpy as np
import tensorflow as tf

from pabt_tf.data.image_files import (  # noqa: F401  (MAX_* are public here too)
    MAX_FILE_BYTES,
    MAX_PIXELS,
    apply_orientation,
    jpeg_orientation,
)
from pabt_tf.data.image_files import check_fits as _check_fits
from pabt_tf.data.image_files import declared_size as _declared_size
from pabt_tf.data.image_files import read_image_file as _read_image_file
from pabt_tf.data.pipeline import (
    Datasets,
    array_pipelines,
    check_pipeline_arguments,
    fingerprint,
    normalize_image,
    split_train_validation,
)

__all__ = [
    "ImageArrays",
    "channel_statistics",
    "read_class_folders",
    "load_image_folder",
    "check_keywords",
    "array_datasets",
    "image_folder_datasets",
]

SPLITS = ("train", "test")


@dataclasses.dataclass
class ImageArrays:
    """A classification data set as arrays: uint8 images `(n, height, width, channels)`,
    int32 labels `(n,)` indexing `classes`."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]
    source: str = ""


# -- class folders ----------------------------------------------------------------------


def _visible(names: list[str]) -> list[str]:
    # Hidden entries (.DS_Store, .ipynb_checkpoints, ...) are not data.
    return sorted(n for n in names if not n.startswith("."))


def _class_files(split_dir: str) -> tuple[tuple[str, ...], list[tuple[str, int]]]:
    """The sorted class names of `split_dir` and every `(file, label)` under them."""
    if not os.path.isdir(split_dir):
        raise FileNotFoundError(
            f"{split_dir}: no such folder; expected a class-folder tree "
            "<data_dir>/train/<class>/<image> and <data_dir>/test/<class>/<image>."
        )
    entries = _visible(os.listdir(split_dir))
    strays = [e for e in entries if not os.path.isdir(os.path.join(split_dir, e))]
    if strays:
        raise ValueError(
            f"{split_dir}: expected only class folders, found file(s) {strays[:3]}; "
            "an image must be inside its class's folder."
        )
    if not entries:
        raise ValueError(f"{split_dir}: no class folders; expected {split_dir}/<class>/<image>.")
    files = []
    for label, name in enumerate(entries):
        class_dir = os.path.join(split_dir, name)
        found = _image_files(class_dir)
        if not found:
            raise ValueError(f"{class_dir}: class {name!r} has no image files.")
        files += [(path, label) for path in sorted(found)]
    return tuple(entries), files


def _image_files(class_dir: str) -> list[str]:
    """Every visible file under `class_dir`, sub-folders included, in a fixed order.

    Symbolic links to folders are followed (a class assembled from links must not lose
    their images silently); a link back into a folder being walked is an error, and so
    is anything that is not a regular file (a FIFO or device would block or never end).
    """
    found = []
    on_path: set[str] = set()

    def walk(folder: str) -> None:
        real = os.path.realpath(folder)
        if real in on_path:
            raise ValueError(f"{folder}: a symbolic link loop (it leads back to {real}).")
        on_path.add(real)
        for name in _visible(os.listdir(folder)):
            path = os.path.join(folder, name)
            if os.path.isdir(path):
                walk(path)
            elif os.path.isfile(path):
                found.append(path)
            else:
                raise ValueError(
                    f"{path}: not a regular file (a dangling link, FIFO, socket or "
                    "device); a class folder must hold image files only."
                )
        on_path.discard(real)

    walk(class_dir)
    return found


def _decode(path: str) -> np.ndarray:
    """One image file as a uint8 `(height, width, channels)` array (JPEG, PNG, BMP, GIF).

    # Raises
        ValueError: not a decodable image, or it declares more than `MAX_PIXELS` pixels.
    """
    content = _read_image_file(path)
    size = _declared_size(content)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise ValueError(
            f"{path}: declares {size[0]}×{size[1]} pixels, more than MAX_PIXELS = "
            f"{MAX_PIXELS:,}; not decoded (a decompression bomb, or not an image of a "
            "training set)."
        )
    jpeg = content[:3] == b"\xff\xd8\xff"
    try:
        if jpeg:
            # TensorFlow's default JPEG IDCT (INTEGER_FAST) shifts the red and blue means
            # of 4:2:0 JPEGs by about 1/255 (measured on CIFAR-10's JPEG copy); the
            # accurate one gives libjpeg's reference pixels, as PIL does.
            image = tf.io.decode_jpeg(content, dct_method="INTEGER_ACCURATE")
        else:
            image = tf.io.decode_image(content, expand_animations=False, dtype=tf.uint8)
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as err:
        raise ValueError(
            f"{path}: not a decodable image (JPEG, PNG, BMP or GIF expected): {err.message}"
        ) from None
    except tf.errors.ResourceExhaustedError as err:
        raise ValueError(f"{path}: too large to decode in memory: {err.message}") from None
    # A photo's EXIF orientation: the pixels upright, as a viewer (and PIL) shows them.
    return apply_orientation(image.numpy(), jpeg_orientation(content)) if jpeg else image.numpy()


def read_class_folders(split_dir: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Decode every image of a class-folder tree.

    Classes are the sorted names of `split_dir`'s sub-folders; an image's label is its
    class's index. Images inside a class may be in sub-folders (symbolic links to
    folders are followed). Hidden files and folders are skipped.

    # Arguments
        split_dir: e.g. `<data_dir>/train`, holding `<class>/<image>`.

    # Returns
        `(images, labels, classes)`: uint8 `(n, height, width, channels)`, int32 `(n,)`,
        the class names.

    # Raises
        FileNotFoundError: `split_dir` does not exist.
        ValueError: no class folders, a file beside the class folders, an empty class, a
            file that is not a decodable image or not a regular file (FIFO, device,
            dangling link), a symbolic link loop, or images of different shapes (names
            the path).
    """
    classes, files = _class_files(split_dir)
    images, first = None, None
    labels = np.empty(len(files), np.int32)
    header = _declared_size(_read_image_file(files[0][0]))
    if header is not None:  # before decoding anything: the first image sets every size
        _check_fits(files[0][0], header, len(files), "its header declares")
    for i, (path, label) in enumerate(files):
        image = _decode(path)
        if images is None:
            _check_fits(path, image.shape, len(files), "an image of")
            try:
                images = np.empty((len(files), *image.shape), np.uint8)
            except MemoryError:
                raise ValueError(
                    f"{path}: {len(files)} images of shape {image.shape} do not fit in "
                    "memory as uint8; resize the images first."
                ) from None
            first = path
        elif image.shape != images.shape[1:]:
            raise ValueError(
                f"{path}: image of shape {image.shape}, but {first} is "
                f"{images.shape[1:]}; every image must have the same height, width and "
                "channels (resize them first)."
            )
        images[i], labels[i] = image, label
    return images, labels, classes


# Decoded trees of this process: {split folder: (signature, arrays)}.
_DECODED: dict[str, tuple[tuple, tuple]] = {}


def _signature(split_dir: str) -> tuple:
    """What must not have changed for decoded arrays to be reused: every file's path,
    size and modification time."""
    _, files = _class_files(split_dir)
    return tuple((p, label, os.stat(p).st_size, os.stat(p).st_mtime_ns) for p, label in files)


def _read_split_once(split_dir: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    split_dir = os.path.realpath(split_dir)
    signature = _signature(split_dir)
    cached = _DECODED.get(split_dir)
    if cached is not None and cached[0] == signature:
        return cached[1]
    arrays = read_class_folders(split_dir)
    _DECODED[split_dir] = (signature, arrays)
    return arrays


def load_image_folder(data_dir: str) -> ImageArrays:
    """A class-folder data set `<data_dir>/{train,test}/<class>/<image>`, decoded once per
    process.

    # Raises
        FileNotFoundError / ValueError: see `read_class_folders`; also when train and
            test have different class lists or image shapes.
    """
    data_dir = os.path.abspath(os.path.expanduser(data_dir))
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(
            f"`data_dir` {data_dir} does not exist; expected a class-folder tree "
            "<data_dir>/train/<class>/<image> and <data_dir>/test/<class>/<image>."
        )
    train_x, train_y, classes = _read_split_once(os.path.join(data_dir, "train"))
    test_x, test_y, test_classes = _read_split_once(os.path.join(data_dir, "test"))
    if classes != test_classes:
        raise ValueError(
            f"{data_dir}: train and test have different class folders: only in train "
            f"{sorted(set(classes) - set(test_classes))}, only in test "
            f"{sorted(set(test_classes) - set(classes))}."
        )
    if train_x.shape[1:] != test_x.shape[1:]:
        raise ValueError(
            f"{data_dir}: train images are {train_x.shape[1:]} but test images are "
            f"{test_x.shape[1:]}; both splits must have the same image shape."
        )
    return ImageArrays(train_x, train_y, test_x, test_y, classes, data_dir)


# -- pipelines --------------------------------------------------------------------------


def channel_statistics(images: np.ndarray, chunk: int = 4096) -> tuple[tuple, tuple]:
    """Per-channel mean and standard deviation of uint8 images on a 0–1 scale.

    Accumulated in float64 over chunks, so a large uint8 array is never copied whole.
    """
    if len(images) == 0:
        raise ValueError("`images` is empty: no statistics to normalise with.")
    channels = images.shape[-1]
    total = np.zeros(channels, np.float64)
    squares = np.zeros(channels, np.float64)
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk].reshape(-1, channels).astype(np.float64) / 255.0
        total += part.sum(0)
        squares += (part**2).sum(0)
    count = images.size // channels
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    # A constant channel would divide by zero: leave its scale alone.
    std = np.where(std > 1e-6, std, 1.0)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def array_datasets(
    arrays: ImageArrays,
    name: str,
    batch_size: int = 128,
    validation_size: int = 5000,
    augment: bool = True,
    seed: int = 0,
    train_limit: int | None = None,
    validation_limit: int | None = None,
    test_limit: int | None = None,
    crop_padding: int = 4,
    flip: bool = True,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Datasets:
    """Train / validation / test pipelines of in-memory uint8 images.

    The validation set is a random subset of the training images fixed by `seed`;
    normalisation is per channel with the statistics of the training images that remain
    (unless `mean` and `std` are given); training batches only are augmented (random crop
    after `crop_padding` zero pixels on each side, random horizontal flip: the CIFAR
    recipe).

    # Arguments
        arrays: the images and labels.
        name: the `Datasets.name`.
        validation_size: training images held out for validation (0 = validate on test).
        augment, crop_padding, flip: the training augmentation.
        train_limit, validation_limit, test_limit: keep only the first examples of each.
        mean, std: per-channel normalisation on a 0–1 scale (default: from training).
        Others: as in `fashion_mnist_datasets`.

    # Returns
        A `Datasets` of `(image float32, label int32)` batches.

    # Raises
        ValueError: on a bad argument, before any pipeline is made.
    """
    batch_size = check_pipeline_arguments(
        batch_size, train_limit, validation_limit, test_limit, crop_padding, mean, std
    )
    if len(arrays.classes) < 2:
        raise ValueError(
            f"{arrays.source or name}: {len(arrays.classes)} class(es) "
            f"{list(arrays.classes)}; a classifier needs at least 2 (one folder per class)."
        )
    (x_train, y_train), (x_val, y_val) = split_train_validation(
        arrays.train_images, arrays.train_labels, validation_size, seed, keep_classes=True
    )
    x_test, y_test = arrays.test_images[:test_limit], arrays.test_labels[:test_limit]
    if validation_size == 0:
        x_val, y_val = x_test, y_test
    x_train, y_train = x_train[:train_limit], y_train[:train_limit]
    x_val, y_val = x_val[:validation_limit], y_val[:validation_limit]
    if mean is None:
        mean, std = channel_statistics(x_train)
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(mean) != x_train.shape[-1] or len(std) != x_train.shape[-1] or min(std) <= 0:
        raise ValueError(
            f"`mean` and `std` must have {x_train.shape[-1]} values (one per channel), std "
            f"positive; got {mean} and {std}."
        )

    def preprocess(image, label):
        return normalize_image(tf.cast(image, tf.float32) / 255.0, mean, std), label

    train, validation, test = array_pipelines(
        (x_train, y_train), (x_val, y_val), (x_test, y_test), batch_size, seed, preprocess,
        crop_padding if augment else None, flip,
    )  # fmt: skip

    return Datasets(
        train=train,
        validation=validation,
        test=test,
        input_shape=tuple(int(d) for d in x_train.shape[1:]),
        num_classes=len(arrays.classes),
        train_size=len(x_train),
        validation_size=len(x_val),
        test_size=len(x_test),
        batch_size=batch_size,
        name=name,
        classes=arrays.classes,
        mean=mean,
        std=std,
        fingerprint=fingerprint(arrays.train_images, arrays.train_labels, arrays.test_images,
                                arrays.test_labels, arrays.classes),
    )


def image_folder_datasets(data_dir: str, **kwargs) -> Datasets:
    """Pipelines of a user's own class-folder data set
    `<data_dir>/{train,test}/<class>/<image>` (label = index of the sorted class name).

    # Arguments
        data_dir: the folder holding `train/` and `test/`.
        **kwargs: see `array_datasets` (validation split, augmentation, limits, ...).

    # Raises
        ValueError: a missing `data_dir`; see `load_image_folder` and `array_datasets`.
    """
    if not data_dir:
        raise ValueError(
            "`data_dir` is required for the image_folder data set: a folder holding "
            "train/<class>/<image> and test/<class>/<image>."
        )
    check_pipeline_arguments(**check_keywords(kwargs))
    return array_datasets(load_image_folder(data_dir), "image_folder", **kwargs)


def check_keywords(kwargs: dict) -> dict:
    """`kwargs`, if every key is an `array_datasets` argument.

    # Raises
        TypeError: naming the unknown keys, before any data is read.
    """
    known = set(inspect.signature(array_datasets).parameters) - {"arrays", "name"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(f"unknown data set argument(s) {unknown}; expected some of {sorted(known)}.")
    return kwargs
