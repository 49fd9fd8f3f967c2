"""Semantic segmentation from image / mask pairs on disk: CamVid in the SegNet layout
(`camvid_datasets`) and a user's own pairs (`mask_folder_datasets`).

Both decode every pair once per process (uint8 arrays kept in memory), check it (an image
without its mask or the reverse, an image and mask of different sizes, a label outside
`[0, num_classes) ∪ {ignore_label}`, an empty split: each a clear error naming the path,
raised before any pipeline exists), resize to the training resolution once (bilinear with
antialiasing for images, nearest neighbour for labels, so a resized label never holds a
class its original did not), and build the pipelines: random scale, crop and horizontal
flip applied to image and label together on training batches only; normalisation with the
training split's channel statistics; optional median-frequency class weights from the
training labels. `Datasets.test_full` pairs the test images at the training resolution
with their labels at the original resolution, for the benchmark's evaluation with logits
upsampled to it (`pabt_tf.metrics.evaluate_segmentation(..., output_size=...)`).

Layouts:

    camvid:       <dir>/{train,val,test}.txt   "<image path> <label path>" per line (paths
                  from the machine that wrote them: their last two components are
                  resolved against <dir>), <dir>/{train,trainannot,val,...}/*.png
    mask_folder:  <dir>/{train,val,test}/{images,masks}/<stem>.<ext>  (val optional: then
                  carved from train by seed), and <dir>/classes.json:
                  {"num_classes": K, "ignore_label": 255, "classes": [...], "colors": [...]}
                  (or `num_classes` / `ignore_label` given as arguments)
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from pabt_tf.data.image_folder import MAX_PIXELS, _declared_size, _decode, channel_statistics
from pabt_tf.data.pipeline import (
    Datasets,
    batch,
    check_batch_size,
    check_limit,
    check_normalization,
    fingerprint,
    normalize_image,
    train_pipeline,
)

__all__ = [
    "CAMVID_CLASSES",
    "CAMVID_COLORS",
    "CAMVID_IGNORE_LABEL",
    "SegmentationArrays",
    "camvid_datasets",
    "mask_folder_datasets",
    "median_frequency_weights",
    "read_mask",
    "segmentation_datasets",
]

CAMVID_CLASSES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol",
                  "Fence", "Car", "Pedestrian", "Bicyclist")  # fmt: skip
CAMVID_IGNORE_LABEL = 11
"""CamVid's "Unlabelled" (3.95 % of the training pixels): out of the loss and every metric."""
# SegNet's colours for CamVid's classes (its tutorial's palette), for pictures.
CAMVID_COLORS = ((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
                 (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0),
                 (0, 128, 192))  # fmt: skip

_SPLITS = ("train", "val", "test")
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


class SegmentationArrays:
    """Decoded pairs of one data set, at the original resolution: per split a uint8 image
    array `(n, h, w, 3)` and a uint8/int32 label array `(n, h, w)`, or per-image lists
    when sizes differ between images; `paths` per split (image paths) for messages."""

    def __init__(self, splits: dict[str, tuple[list, list, list]], classes: tuple[str, ...],
                 ignore_label: int | None, colors: tuple | None, root: str):
        self.splits = splits  # {split: (images, labels, image paths)}
        self.classes = classes
        self.ignore_label = ignore_label
        self.colors = colors
        self.root = root


def read_mask(path: str) -> np.ndarray:
    """One mask file as a 2-D array of class ids.

    A palette PNG gives its palette indices (as VOC-style masks store classes), a
    grayscale image its values. An RGB(A) mask is refused: colours are not class ids.

    # Raises
        ValueError: not a decodable image, too many pixels, or not single-channel.
    """
    from PIL import Image

    with open(path, "rb") as f:
        head = f.read(64 * 1024)
    size = _declared_size(head)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise ValueError(f"{path}: declares {size[0]}×{size[1]} pixels, more than MAX_PIXELS.")
    try:
        with Image.open(path) as image:
            mode = image.mode
            if mode not in ("P", "L", "I", "I;16", "I;16B", "I;16L", "1"):
                raise ValueError(
                    f"{path}: a mask must hold one class id per pixel (a palette or "
                    f"grayscale image); this one is {mode}."
                )
            array = np.asarray(image)
    except ValueError:
        raise
    except Exception as err:  # PIL raises many types for a broken file
        raise ValueError(f"{path}: not a decodable mask image: {err}") from None
    return array.astype(np.int32)


def _stem_files(folder: str) -> dict[str, str]:
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder} does not exist (expected a folder of image files).")
    files = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        stem, ext = os.path.splitext(name)
        if name.startswith(".") or ext.lower() not in _IMAGE_EXTENSIONS or not os.path.isfile(path):
            continue
        if stem in files:
            raise ValueError(f"{path}: a second file with the stem {stem!r} ({files[stem]}).")
        files[stem] = path
    return files


def _folder_pairs(split_dir: str) -> list[tuple[str, str]]:
    """`(image, mask)` paths of `split_dir/images` and `split_dir/masks`, by stem."""
    images = _stem_files(os.path.join(split_dir, "images"))
    masks = _stem_files(os.path.join(split_dir, "masks"))
    for stem, path in images.items():
        if stem not in masks:
            raise ValueError(f"{path}: image without a mask (no {stem}.* in {split_dir}/masks).")
    for stem, path in masks.items():
        if stem not in images:
            raise ValueError(f"{path}: mask without an image (no {stem}.* in {split_dir}/images).")
    return [(images[s], masks[s]) for s in sorted(images)]


def _list_pairs(root: str, list_file: str) -> list[tuple[str, str]]:
    """The pairs of a SegNet list file; each path's last two components resolved
    against `root` (the lists were written on another machine)."""
    pairs = []
    with open(list_file) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(f"{list_file}:{number}: expected '<image path> <label path>', got {line!r}.")
            resolved = []
            for part in parts:
                tail = part.replace("\\", "/").rstrip("/").split("/")[-2:]
                path = os.path.join(root, *tail)
                if not os.path.isfile(path):
                    raise FileNotFoundError(f"{list_file}:{number}: {path} (from {part}) does not exist.")
                resolved.append(path)
            pairs.append((resolved[0], resolved[1]))
    return pairs


def _read_pairs(pairs, split: str, num_classes: int, ignore_label: int | None):
    if not pairs:
        raise ValueError(f"split {split!r} is empty: no image / mask pairs.")
    images, labels, paths = [], [], []
    for image_path, mask_path in pairs:
        image = _decode(image_path)
        if image.shape[-1] == 4:
            image = image[..., :3]
        elif image.shape[-1] == 1:
            image = np.repeat(image, 3, axis=-1)
        mask = read_mask(mask_path)
        if mask.shape != image.shape[:2]:
            raise ValueError(
                f"{mask_path}: mask of size {mask.shape[0]}×{mask.shape[1]}, but its image "
                f"{image_path} is {image.shape[0]}×{image.shape[1]}."
            )
        bad = [int(v) for v in np.unique(mask) if not (0 <= v < num_classes or v == ignore_label)]
        if bad:
            raise ValueError(
                f"{mask_path}: label values {bad[:10]} outside "
                f"[0, {num_classes}) ∪ {{ignore_label={ignore_label}}}."
            )
        images.append(image)
        labels.append(mask.astype(np.uint8 if mask.max(initial=0) < 256 else np.int32))
        paths.append(image_path)
    return images, labels, paths


# Decoded data sets of this process: {(layout, root, classes, ignore): (signature, arrays)}.
_DECODED: dict[tuple, tuple[tuple, SegmentationArrays]] = {}


def _signature(pairs_by_split: dict) -> tuple:
    return tuple(
        (split, tuple((p, os.stat(p).st_size, os.stat(p).st_mtime_ns) for pair in pairs for p in pair))
        for split, pairs in sorted(pairs_by_split.items())
    )


def _load(layout: str, root: str, pairs_by_split: dict, classes, ignore_label, colors) -> SegmentationArrays:
    key = (layout, root, tuple(classes), ignore_label)
    signature = _signature(pairs_by_split)
    cached = _DECODED.get(key)
    if cached is not None and cached[0] == signature:
        return cached[1]
    splits = {s: _read_pairs(p, s, len(classes), ignore_label) for s, p in pairs_by_split.items()}
    arrays = SegmentationArrays(splits, tuple(classes), ignore_label, colors, root)
    _DECODED[key] = (signature, arrays)
    return arrays


def load_camvid(data_dir: str) -> SegmentationArrays:
    """CamVid in the SegNet layout (see the module docstring), decoded once per process.

    # Raises
        FileNotFoundError: `data_dir`, a list file or a listed file is missing.
        ValueError: a malformed list line or any bad pair (see `_read_pairs`).
    """
    root = os.path.abspath(os.path.expanduser(data_dir))
    if not os.path.isdir(root):
        raise FileNotFoundError(f"`data_dir` {root} does not exist; expected CamVid in the SegNet "
                                "layout (train.txt, val.txt, test.txt, train/, trainannot/, ...).")
    pairs = {}
    for split in _SPLITS:
        list_file = os.path.join(root, f"{split}.txt")
        if not os.path.isfile(list_file):
            raise FileNotFoundError(f"{list_file} does not exist (CamVid's SegNet layout has "
                                    "train.txt, val.txt and test.txt).")
        pairs[split] = _list_pairs(root, list_file)
    return _load("camvid", root, pairs, CAMVID_CLASSES, CAMVID_IGNORE_LABEL, CAMVID_COLORS)


def _class_file(root: str, num_classes, ignore_label) -> tuple[tuple[str, ...], int | None, tuple | None]:
    path = os.path.join(root, "classes.json")
    meta: dict[str, Any] = {}
    if os.path.isfile(path):
        try:
            with open(path) as f:
                meta = json.load(f)
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: not a JSON object: {err}") from None
        if not isinstance(meta, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(meta).__name__}.")
    names = meta.get("classes")
    num_classes = num_classes if num_classes is not None else meta.get("num_classes")
    if num_classes is None and names is not None:
        num_classes = len(names)
    if num_classes is None:
        raise ValueError(f"`num_classes` is needed: give it, or write {path} with "
                         '{"num_classes": K, "ignore_label": ...}.')
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"`num_classes` must be an integer >= 2, got {num_classes!r}.")
    ignore_label = ignore_label if ignore_label is not None else meta.get("ignore_label")
    if ignore_label is not None and (isinstance(ignore_label, bool) or not isinstance(ignore_label, int)
                                     or 0 <= ignore_label < num_classes or ignore_label < 0):
        raise ValueError(f"`ignore_label` must be None or an integer >= num_classes "
                         f"({num_classes}), got {ignore_label!r}.")
    if names is None:
        names = [f"class_{i}" for i in range(num_classes)]
    if not isinstance(names, list) or len(names) != num_classes or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path}: `classes` must be a list of {num_classes} names, got {names!r}.")
    colors = meta.get("colors")
    if colors is not None:
        if (not isinstance(colors, list) or len(colors) != num_classes
                or not all(isinstance(c, list) and len(c) == 3 for c in colors)):
            raise ValueError(f"{path}: `colors` must be {num_classes} [r, g, b] lists.")
        colors = tuple(tuple(int(v) for v in c) for c in colors)
    return tuple(names), ignore_label, colors


def load_mask_folder(data_dir: str, num_classes: int | None = None,
                     ignore_label: int | None = None) -> SegmentationArrays:
    """A user's pairs `<data_dir>/{train,val,test}/{images,masks}/<stem>.*` (val optional),
    decoded once per process; classes from the arguments or `<data_dir>/classes.json`.

    # Raises
        FileNotFoundError: `data_dir`, `train/` or `test/` is missing.
        ValueError: bad classes.json or arguments, or any bad pair (named by path).
    """
    root = os.path.abspath(os.path.expanduser(data_dir))
    if not os.path.isdir(root):
        raise FileNotFoundError(f"`data_dir` {root} does not exist; expected "
                                "<data_dir>/{train,test}/{images,masks}/.")
    classes, ignore_label, colors = _class_file(root, num_classes, ignore_label)
    pairs = {}
    for split in _SPLITS:
        split_dir = os.path.join(root, split)
        if split == "val" and not os.path.isdir(split_dir):
            continue
        pairs[split] = _folder_pairs(split_dir)
    return _load("mask_folder", root, pairs, classes, ignore_label, colors)


def median_frequency_weights(labels: Sequence[np.ndarray], num_classes: int) -> tuple[float, ...]:
    """SegNet's median-frequency class weights from training labels:
    `w_c = median(f) / f_c` with `f_c` = pixels of class c / pixels of the images where c
    occurs. A class that never occurs gets weight 0 (it cannot be learned from this split).
    Labels outside `[0, num_classes)` (the ignore label) are not counted."""
    pixels = np.zeros(num_classes, np.float64)
    present_pixels = np.zeros(num_classes, np.float64)
    for label in labels:
        counts = np.bincount(label.ravel().astype(np.int64), minlength=num_classes)[:num_classes]
        pixels += counts
        present_pixels[counts > 0] += label.size
    freq = np.divide(pixels, present_pixels, out=np.zeros_like(pixels), where=present_pixels > 0)
    median = np.median(freq[freq > 0]) if np.any(freq > 0) else 1.0
    weights = np.divide(median, freq, out=np.zeros_like(freq), where=freq > 0)
    return tuple(float(w) for w in weights)


def _resize(images: list, labels: list, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Every pair at `size`: images bilinear (antialiased), labels nearest neighbour."""
    out_x = np.empty((len(images), *size, 3), np.uint8)
    out_y = np.empty((len(labels), *size), labels[0].dtype)
    for i, (image, label) in enumerate(zip(images, labels)):
        if image.shape[:2] == size:
            out_x[i], out_y[i] = image, label
            continue
        x = tf.image.resize(image.astype(np.float32), size, method="bilinear", antialias=True)
        out_x[i] = np.clip(np.round(x.numpy()), 0, 255).astype(np.uint8)
        y = tf.image.resize(label[..., None], size, method="nearest")
        out_y[i] = y.numpy()[..., 0]
    return out_x, out_y


def _check_size(name: str, value) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        size = tuple(value)
    except TypeError:
        size = ()
    if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in size):
        raise ValueError(f"`{name}` must be (height, width) positive integers, got {value!r}.")
    return int(size[0]), int(size[1])


def segmentation_datasets(
    arrays: SegmentationArrays,
    name: str,
    batch_size: int = 8,
    image_size: Sequence[int] | None = None,
    crop_size: Sequence[int] | None = None,
    scale_range: Sequence[float] = (1.0, 1.5),
    validation_size: int = 0,
    augment: bool = True,
    seed: int = 0,
    train_limit: int | None = None,
    validation_limit: int | None = None,
    test_limit: int | None = None,
    class_weights: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Datasets:
    """Train / validation / test pipelines of decoded image / mask pairs.

    # Arguments
        arrays: from `load_camvid` / `load_mask_folder`.
        name: the data set's name, recorded in the `Datasets`.
        batch_size: examples per batch.
        image_size: `(height, width)` every image and label is resized to once (default:
            the first training image's size; every image must then have it).
        crop_size: training crops (default `image_size`; no larger). The model's input.
        scale_range: training images are zoomed by a factor drawn from this range
            (>= 1: then cropped to `crop_size`) together with their labels.
        validation_size: 0 = the data set's own `val` split (an error if it has none);
            n > 0 = n training pairs carved out by `seed` (an error if a `val` split
            exists: two validation sets would be one too many).
        augment: random scale, crop and flip of training pairs (image and label together).
        seed: fixes the split, shuffling and augmentation.
        train_limit, validation_limit, test_limit: use only the first n pairs of a split.
        class_weights: None, `"median_frequency"` (SegNet's rule, from the training
            labels) or one weight per class: `Datasets.class_weights`, which the run's
            loss then uses.
        mean, std: normalisation on a 0-1 scale (default: the training split's).

    # Returns
        A `Datasets` with `task="segmentation"`, `ignore_label`, `class_weights`,
        `test_full` and `full_size` (when every test image has one size).

    # Raises
        ValueError: on a bad argument, naming it, before any pipeline is built.
    """
    batch_size = check_batch_size(batch_size)
    for arg, value in (("train_limit", train_limit), ("validation_limit", validation_limit),
                       ("test_limit", test_limit)):  # fmt: skip
        check_limit(arg, value)
    image_size = _check_size("image_size", image_size)
    crop = _check_size("crop_size", crop_size)
    try:
        low, high = (float(v) for v in scale_range)
    except (TypeError, ValueError):
        low = high = float("nan")
    if not (1.0 <= low <= high < 8.0):
        raise ValueError(f"`scale_range` must be (low, high) with 1 <= low <= high < 8, got {scale_range!r}.")
    num_classes = len(arrays.classes)
    given_weights = None
    if isinstance(class_weights, (list, tuple, np.ndarray)):
        given_weights = tuple(float(w) for w in class_weights)
        if len(given_weights) != num_classes or not all(np.isfinite(w) and w >= 0 for w in given_weights):
            raise ValueError(f"`class_weights` must be {num_classes} finite non-negative numbers, got "
                             f"{class_weights!r}.")
    elif class_weights not in (None, "median_frequency"):
        raise ValueError(f"`class_weights` must be None, 'median_frequency' or {num_classes} numbers, "
                         f"got {class_weights!r}.")
    if (mean is None) != (std is None):
        raise ValueError("`mean` and `std` must be given together.")
    if mean is not None:
        check_normalization(mean, std)
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"`mean` and `std` must have 3 values (RGB), got {mean!r}, {std!r}.")
    if isinstance(validation_size, bool) or not isinstance(validation_size, (int, np.integer)) or validation_size < 0:
        raise ValueError(f"`validation_size` must be a non-negative integer, got {validation_size!r}.")

    splits = dict(arrays.splits)
    train_x, train_y, train_paths = (list(v) for v in splits["train"])
    if validation_size == 0:
        if "val" not in splits:
            raise ValueError(f"{arrays.root} has no val split: give `validation_size` > 0 to carve one "
                             "from train.")
        val_x, val_y, _ = splits["val"]
    else:
        if "val" in splits:
            raise ValueError(f"{arrays.root} has its own val split; `validation_size` must be 0 (use it), "
                             f"got {validation_size}.")
        if validation_size >= len(train_x):
            raise ValueError(f"`validation_size` must be below the {len(train_x)} training pairs, "
                             f"got {validation_size}.")
        order = np.random.default_rng(seed).permutation(len(train_x))
        val_idx, train_idx = order[:validation_size], np.sort(order[validation_size:])
        val_x, val_y = [train_x[i] for i in val_idx], [train_y[i] for i in val_idx]
        train_x, train_y = [train_x[i] for i in train_idx], [train_y[i] for i in train_idx]
        train_paths = [train_paths[i] for i in train_idx]
    test_x, test_y, _ = splits["test"]

    def limit(xs, ys, n):
        return (list(xs), list(ys)) if n is None else (list(xs)[:n], list(ys)[:n])

    train_x, train_y = limit(train_x, train_y, train_limit)
    val_x, val_y = limit(val_x, val_y, validation_limit)
    test_x, test_y = limit(test_x, test_y, test_limit)

    if image_size is None:
        image_size = tuple(train_x[0].shape[:2])
        for x, path in zip(train_x, train_paths):
            if x.shape[:2] != image_size:
                raise ValueError(f"{path}: {x.shape[0]}×{x.shape[1]}, but the first training image is "
                                 f"{image_size[0]}×{image_size[1]}; give `image_size` to resize them.")
    crop = crop or image_size
    if crop[0] > image_size[0] or crop[1] > image_size[1]:
        raise ValueError(f"`crop_size` {crop} must be no larger than `image_size` {image_size}.")

    weights = given_weights
    if class_weights == "median_frequency":
        weights = median_frequency_weights(train_y, num_classes)
    train_x, train_y = _resize(train_x, train_y, image_size)
    val_x, val_y = _resize(val_x, val_y, image_size)
    full_sizes = {y.shape for y in test_y}
    full_test_y = np.stack(test_y) if len(full_sizes) == 1 else None
    test_x, test_y = _resize(test_x, test_y, image_size)
    if mean is None:
        mean, std = channel_statistics(train_x)
    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)

    ignore = arrays.ignore_label

    def preprocess(image, label):
        image = normalize_image(tf.cast(image, tf.float32) / 255.0, mean, std)
        return image, tf.cast(label, tf.int32)

    def augment_fn(example, s):
        image, label = example
        seeds = tf.random.experimental.stateless_split(s, 3)
        scale = tf.random.stateless_uniform([], seeds[0], low, high)
        size = tf.maximum(tf.cast(tf.round(scale * tf.constant(image_size, tf.float32)), tf.int32),
                          tf.constant(crop))
        image = tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear")
        label = tf.image.resize(tf.cast(label[..., None], tf.int32), size, method="nearest")
        # Image and label as one tensor, so that both get the same crop and flip.
        both = tf.concat([image, tf.cast(label, tf.float32)], -1)
        both = tf.image.stateless_random_crop(both, [*crop, 4], seed=seeds[1])
        both = tf.image.stateless_random_flip_left_right(both, seed=seeds[2])
        image = tf.clip_by_value(tf.round(both[..., :3]), 0.0, 255.0)
        label = tf.cast(tf.round(both[..., 3]), tf.int32)
        image.set_shape([*crop, 3])
        label.set_shape(crop)
        return image, label

    def center(example):  # no augmentation: the middle crop (all of it by default)
        image, label = example
        top, left = (image_size[0] - crop[0]) // 2, (image_size[1] - crop[1]) // 2
        return image[top:top + crop[0], left:left + crop[1]], label[top:top + crop[0], left:left + crop[1]]

    train_ds = tf.data.Dataset.from_tensor_slices((train_x, train_y))
    if not augment:
        train_ds = train_ds.map(lambda x, y: center((x, y)))
    train = train_pipeline(train_ds, len(train_x), batch_size, seed, augment_fn if augment else None,
                           preprocess, None)

    def evaluation(xs, ys):
        ds = tf.data.Dataset.from_tensor_slices((xs, ys))
        return batch(ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE), batch_size)

    test_full = None if full_test_y is None else evaluation(test_x, full_test_y)
    return Datasets(
        train=train, validation=evaluation(val_x, val_y), test=evaluation(test_x, test_y),
        input_shape=(*crop, 3), num_classes=num_classes, train_size=len(train_x),
        validation_size=len(val_x), test_size=len(test_x), batch_size=batch_size, name=name,
        classes=arrays.classes, mean=mean, std=std, task="segmentation", ignore_label=ignore,
        class_weights=weights, test_full=test_full,
        full_size=None if full_test_y is None else tuple(full_test_y.shape[1:3]),
        colors=arrays.colors,
        fingerprint=fingerprint(train_x, train_y, val_x, val_y, test_x, test_y),
    )  # fmt: skip


def camvid_datasets(data_dir: str, **kwargs) -> Datasets:
    """CamVid (SegNet split, 11 classes, "Unlabelled" = 11 ignored) pipelines; keyword
    arguments as in `segmentation_datasets` (its own val split by default).

    # Raises
        FileNotFoundError / ValueError: see `load_camvid` and `segmentation_datasets`.
    """
    if data_dir is None:
        raise ValueError("`data_dir` is needed for camvid: the folder with train.txt, val.txt, test.txt.")
    return segmentation_datasets(load_camvid(data_dir), "camvid", **kwargs)


def mask_folder_datasets(data_dir: str, num_classes: int | None = None,
                         ignore_label: int | None = None, **kwargs) -> Datasets:
    """A user's image / mask pairs (see `load_mask_folder`); keyword arguments as in
    `segmentation_datasets`. Without a `val` folder pass `validation_size` > 0.

    # Raises
        FileNotFoundError / ValueError: see `load_mask_folder` and `segmentation_datasets`.
    """
    if data_dir is None:
        raise ValueError("`data_dir` is needed for mask_folder: <data_dir>/{train,test}/{images,masks}.")
    arrays = load_mask_folder(data_dir, num_classes, ignore_label)
    return segmentation_datasets(arrays, "mask_folder", **kwargs)
