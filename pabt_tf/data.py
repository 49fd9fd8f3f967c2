"""Data sets: Fashion-MNIST from Debian's `dataset-fashion-mnist` package (offline).

`load_fashion_mnist` reads the four IDX files the package installs under
`/usr/share/datasets/fashion-mnist/`. Nothing is ever downloaded.
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np

__all__ = ["FASHION_MNIST_DIR", "FASHION_MNIST_CLASSES", "load_fashion_mnist", "read_idx"]

FASHION_MNIST_DIR = os.environ.get(
    "PABT_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"
)
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


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
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"`limit` must be a positive integer or None, got {limit!r}.")
    directory = data_dir or FASHION_MNIST_DIR
    images = read_idx(_find(directory, _FILES[split][0]))
    labels = read_idx(_find(directory, _FILES[split][1]))
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    images = images.astype(np.float32)[..., None] / 255.0
    return images, labels.astype(np.int32)
