"""Data sets as `tf.data` pipelines, all offline.

- Fashion-MNIST from Debian's `dataset-fashion-mnist` package: `load_fashion_mnist` reads
  the four IDX files it installs under `/usr/share/datasets/fashion-mnist/` (or the
  folder `$PABT_FASHION_MNIST_DIR` names when the data is loaded);
  `fashion_mnist_datasets` turns them into train / validation / test pipelines
  (augmentation, normalisation, a validation split carved from train by seed, batching).
- CIFAR-10 from a class-folder tree, the official `cifar-10-batches-py` pickles or a
  prepared tfds directory (`cifar10_datasets` tells them apart), and any class-folder
  data set of the user's (`image_folder_datasets`): decoded once per process, kept as
  uint8, normalised with the training split's statistics.
- ImageNet (`imagenet2012`) and Cityscapes (`cityscapes`, config
  `semantic_segmentation`) through tensorflow-datasets, read **only** from a `data_dir`
  the user has already prepared (`tfds build ... --data_dir DIR`). Nothing is ever
  downloaded: missing data is a `FileNotFoundError` naming the directory expected.

`load_datasets(name, ...)` dispatches on the data set name.

Modules: `pipeline` (the `Datasets` record and the pieces every pipeline shares),
`fashion_mnist`, `image_folder` (class folders, CIFAR-10 pickles, pipelines of uint8
arrays), `cifar10` (its layouts), `tfds_sets` (the offline tfds builder, ImageNet),
`cityscapes`. Every public name is re-exported here.
"""

from __future__ import annotations

from typing import Any

from pabt_tf.data.cifar10 import (
    CIFAR10_CLASSES,
    CIFAR10_LAYOUTS,
    cifar10_datasets,
    cifar10_layout,
    read_cifar10_pickles,
)
from pabt_tf.data.cityscapes import (
    CITYSCAPES_IGNORE_LABEL,
    CITYSCAPES_TRAIN_IDS,
    cityscapes_datasets,
)
from pabt_tf.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DEFAULT_DIR,
    FASHION_MNIST_DIR_VARIABLE,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    fashion_mnist_datasets,
    fashion_mnist_dir,
    load_fashion_mnist,
    read_idx,
)
from pabt_tf.data.image_folder import (
    ImageArrays,
    array_datasets,
    channel_statistics,
    image_folder_datasets,
    load_image_folder,
    read_class_folders,
)
from pabt_tf.data.pipeline import Datasets, split_train_validation
from pabt_tf.data.segmentation import (
    CAMVID_CLASSES,
    CAMVID_COLORS,
    CAMVID_IGNORE_LABEL,
    SegmentationArrays,
    camvid_datasets,
    load_camvid,
    load_mask_folder,
    mask_folder_datasets,
    median_frequency_weights,
    read_mask,
    segmentation_datasets,
)
from pabt_tf.data.tfds_sets import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    cifar10_tfds_datasets,
    imagenet_datasets,
    tfds_builder,
)

__all__ = [
    "FASHION_MNIST_DEFAULT_DIR",
    "FASHION_MNIST_DIR_VARIABLE",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DATASETS",
    "Datasets",
    "fashion_mnist_dir",
    "load_fashion_mnist",
    "read_idx",
    "split_train_validation",
    "fashion_mnist_datasets",
    "tfds_builder",
    "CIFAR10_CLASSES",
    "CIFAR10_LAYOUTS",
    "ImageArrays",
    "array_datasets",
    "channel_statistics",
    "cifar10_datasets",
    "cifar10_layout",
    "cifar10_tfds_datasets",
    "image_folder_datasets",
    "load_image_folder",
    "read_cifar10_pickles",
    "read_class_folders",
    "imagenet_datasets",
    "cityscapes_datasets",
    "load_datasets",
    "CITYSCAPES_TRAIN_IDS",
    "CITYSCAPES_IGNORE_LABEL",
    "CAMVID_CLASSES",
    "CAMVID_COLORS",
    "CAMVID_IGNORE_LABEL",
    "SegmentationArrays",
    "camvid_datasets",
    "load_camvid",
    "load_mask_folder",
    "mask_folder_datasets",
    "median_frequency_weights",
    "read_mask",
    "segmentation_datasets",
]

DATASETS = ("fashion_mnist", "cifar10", "image_folder", "imagenet2012", "cityscapes", "camvid",
            "mask_folder")


def load_datasets(name: str, data_dir: str | None = None, **kwargs: Any) -> Datasets:
    """Dispatch to `<name>_datasets`: `"fashion_mnist"` (IDX files; `data_dir` optional),
    `"cifar10"` (class folders, pickles or tfds), `"image_folder"` (a user's class
    folders), `"imagenet2012"`, `"cityscapes"` (tfds), `"camvid"` (SegNet layout),
    `"mask_folder"` (a user's image / mask pairs); all but the first need `data_dir`.

    # Arguments
        name: one of `DATASETS`.
        data_dir: where the data is (see each loader).
        **kwargs: passed on to the loader.

    # Returns
        The loader's `Datasets`.

    # Raises
        ValueError: on an unknown name; whatever the loader raises.
    """
    if name == "fashion_mnist":
        return fashion_mnist_datasets(data_dir=data_dir, **kwargs)
    loaders = {
        "cifar10": cifar10_datasets,
        "image_folder": image_folder_datasets,
        "imagenet2012": imagenet_datasets,
        "cityscapes": cityscapes_datasets,
        "camvid": camvid_datasets,
        "mask_folder": mask_folder_datasets,
    }
    if name not in loaders:
        raise ValueError(f"`name` must be one of {DATASETS}, got {name!r}.")
    return loaders[name](data_dir, **kwargs)
