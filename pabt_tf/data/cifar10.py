"""CIFAR-10 from whichever of its three offline layouts a `data_dir` holds:

- a class-folder tree `train/<class>/*`, `test/<class>/*` (e.g. a JPEG copy; the layout
  `tf.keras.utils.image_dataset_from_directory` reads);
- the official `cifar-10-batches-py` pickles (what Keras' CIFAR-10 download leaves), in
  `data_dir` itself or in `data_dir/cifar-10-batches-py`;
- a tensorflow-datasets data directory holding `cifar10/<version>/`.

The first two are decoded once per process into uint8 arrays and normalised with the
statistics of the training split; the tfds layout streams from its record files with
CIFAR-10's published statistics.
"""

from __future__ import annotations

import os
import pickle

import numpy as np

from pabt_tf.data.image_folder import (
    ImageArrays,
    array_datasets,
    check_keywords,
    load_image_folder,
)
from pabt_tf.data.pipeline import Datasets, check_pipeline_arguments
from pabt_tf.data.tfds_sets import cifar10_tfds_datasets

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_LAYOUTS",
    "cifar10_layout",
    "cifar10_datasets",
    "read_cifar10_pickles",
]

CIFAR10_LAYOUTS = ("class_folders", "pickles", "tfds")
_PICKLES = "cifar-10-batches-py"
_EXPECTED = (
    "expected one of: train/<class>/<image> and test/<class>/<image> (class folders); "
    f"data_batch_1 … data_batch_5 and test_batch ({_PICKLES}, in the folder or in "
    f"<data_dir>/{_PICKLES}); cifar10/<version>/ (a tensorflow-datasets data directory)"
)


# -- CIFAR-10 pickles -------------------------------------------------------------------


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only what the CIFAR-10 batches hold (dicts, lists, bytes, NumPy arrays):
    a pickle naming any other global is refused instead of run."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: a CIFAR-10 batch holds only "
                "arrays, lists and strings"
            )
        return super().find_class(module, name)


def _read_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path}: missing; a cifar-10-batches-py folder holds data_batch_1 … "
            "data_batch_5 and test_batch."
        )
    try:
        with open(path, "rb") as f:
            batch_dict = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as err:  # any malformed pickle: truncated, bad opcodes, huge sizes
        raise ValueError(f"{path}: not a CIFAR-10 batch pickle: {type(err).__name__}: {err}") from None
    if not isinstance(batch_dict, dict):
        raise ValueError(f"{path}: expected a pickled dict, found {type(batch_dict).__name__}.")
    data, labels = batch_dict.get(b"data"), batch_dict.get(b"labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or (
        data.shape[1] != 3 * 32 * 32
    ):
        found = (f"{data.dtype} of shape {data.shape}" if isinstance(data, np.ndarray)
                 else type(data).__name__)
        raise ValueError(f"{path}: expected b'data' uint8 of shape (n, 3072), found {found}.")
    labels = _labels(labels, len(data), path)
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _labels(labels, n: int, path: str) -> np.ndarray:
    """b'labels' as int32, if it is `n` integers in 0..9: a list of ints or an integer
    array (no float, bool or string is coerced)."""
    expected = f"{path}: expected b'labels', {n} integers in 0..9"
    if isinstance(labels, np.ndarray):
        if labels.dtype.kind not in "iu" or labels.ndim != 1:
            raise ValueError(f"{expected}; found an array of {labels.dtype} {labels.shape}.")
        values = labels.astype(np.int64)
    elif isinstance(labels, list):
        bad = next((v for v in labels if isinstance(v, (bool, np.bool_))
                    or not isinstance(v, (int, np.integer))), None)
        if bad is not None:
            raise ValueError(f"{expected}; found {type(bad).__name__} {bad!r}.")
        if any(not 0 <= v < 10 for v in labels):
            raise ValueError(f"{expected}; found {next(v for v in labels if not 0 <= v < 10)}.")
        values = np.array(labels, np.int64) if labels else np.zeros(0, np.int64)
    else:
        raise ValueError(f"{expected}; found {type(labels).__name__}.")
    if len(values) != n:
        raise ValueError(f"{expected}; found {len(values)} labels.")
    if n and not 0 <= values.min() <= values.max() < 10:
        raise ValueError(f"{expected}; found values {values.min()}..{values.max()}.")
    return values.astype(np.int32)


CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


def read_cifar10_pickles(folder: str) -> ImageArrays:
    """The official `cifar-10-batches-py` folder (what Keras' CIFAR-10 download leaves):
    `data_batch_1` … `data_batch_5` and `test_batch`, read with an unpickler that refuses
    anything but arrays and lists (an untrusted pickle cannot run code).

    # Raises
        FileNotFoundError: a batch file is missing.
        ValueError: a file that is not a CIFAR-10 batch (names it).
    """
    parts = [_read_batch(os.path.join(folder, f"data_batch_{i}")) for i in range(1, 6)]
    test_x, test_y = _read_batch(os.path.join(folder, "test_batch"))
    return ImageArrays(
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        test_x,
        test_y,
        CIFAR10_CLASSES,
        os.path.abspath(folder),
    )



def cifar10_layout(data_dir: str) -> tuple[str, str]:
    """Which CIFAR-10 layout `data_dir` holds.

    # Returns
        `(layout, folder)`: one of `CIFAR10_LAYOUTS` and the folder to read it from.

    # Raises
        ValueError: `data_dir` not given.
        FileNotFoundError: `data_dir` missing (names it and the layouts expected). A
            folder with neither class folders nor pickles is taken for a tfds directory,
            whose reader says what is missing.
    """
    if not data_dir:
        raise ValueError(f"`data_dir` is required for cifar10 (it is never downloaded); {_EXPECTED}.")
    data_dir = os.path.abspath(os.path.expanduser(data_dir))
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"`data_dir` {data_dir} does not exist; {_EXPECTED}.")
    if os.path.isdir(os.path.join(data_dir, "train")) or os.path.isdir(os.path.join(data_dir, "test")):
        return "class_folders", data_dir
    for folder in (data_dir, os.path.join(data_dir, _PICKLES)):
        if os.path.isfile(os.path.join(folder, "data_batch_1")):
            return "pickles", folder
    # Otherwise a tfds directory, prepared or not: its reader names what is missing.
    return "tfds", data_dir


def cifar10_datasets(data_dir: str, validation_size: int = 0, **kwargs) -> Datasets:
    """CIFAR-10 train / validation / test pipelines from an offline `data_dir` in any of
    `CIFAR10_LAYOUTS` (never downloads).

    Training batches: random 32×32 crop after 4-pixel zero padding and horizontal flip;
    every split: per-channel normalisation (from the training split for the class-folder
    and pickle layouts).

    # Arguments
        data_dir: the folder (see `cifar10_layout`).
        validation_size: training images held out for validation, a random subset fixed
            by `seed` (0 = validate on test, the usual CIFAR-10 protocol).
        **kwargs: `batch_size`, `augment`, `seed`, `train_limit`, `validation_limit`,
            `test_limit` (all layouts); `crop_padding`, `flip`, `mean`, `std` (class
            folders and pickles).

    # Returns
        A `Datasets` of `(image float32 (32, 32, 3), label int32)` batches.

    # Raises
        ValueError / FileNotFoundError / TypeError: bad arguments or data, naming the
            argument or path, before any pipeline exists.
    """
    layout, folder = cifar10_layout(data_dir)
    if layout == "tfds":
        try:
            return cifar10_tfds_datasets(folder, validation_size=validation_size, **kwargs)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{err} Other layouts read offline: {_EXPECTED}.") from None
    check_pipeline_arguments(**check_keywords(kwargs))
    if layout == "pickles":
        arrays = read_cifar10_pickles(folder)
    else:
        arrays = load_image_folder(folder)
        if arrays.train_images.shape[1:] != (32, 32, 3) or len(arrays.classes) != 10:
            raise ValueError(
                f"{folder}: CIFAR-10 has 10 classes of 32×32×3 images; found "
                f"{len(arrays.classes)} classes {list(arrays.classes)[:12]} of "
                f"{arrays.train_images.shape[1:]}. For other data use the image_folder "
                "data set."
            )
        if arrays.classes != CIFAR10_CLASSES:
            raise ValueError(
                f"{folder}: expected CIFAR-10's class folders {list(CIFAR10_CLASSES)}, found "
                f"{list(arrays.classes)}. For other data use the image_folder data set."
            )
    return array_datasets(arrays, "cifar10", validation_size=validation_size, **kwargs)
