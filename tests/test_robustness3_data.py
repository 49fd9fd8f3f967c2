"""Data loaders that check their arguments and files before anything runs, apply a photo's
EXIF orientation, keep every class in training, and fingerprint what they read (issue
27, the data items of parts 3, 8 and 9)."""

import io
import os
import pickle

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from pabt_tf import data
from pabt_tf.data import image_folder


def _png(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tf.io.write_file(str(path), tf.io.encode_png(tf.constant(image)))


def _arrays(n_per_class=(4, 4, 4), shape=(8, 8, 3), seed=0):
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(n, c, np.int32) for c, n in enumerate(n_per_class)])
    images = rng.integers(0, 256, (len(labels), *shape), dtype=np.uint8)
    classes = tuple(f"c{i}" for i in range(len(n_per_class)))
    return data.ImageArrays(images, labels, images[:6], labels[:6], classes, "mem")


# -- part 8: arguments -------------------------------------------------------------------


@pytest.mark.parametrize("key, value", [("train_limit", 0), ("train_limit", -5), ("train_limit", 2.5),
                                        ("validation_limit", 0), ("test_limit", True),
                                        ("validation_size", -1), ("validation_size", 1.5),
                                        ("batch_size", 0)])  # fmt: skip
@pytest.mark.parametrize("loader", [data.cifar10_tfds_datasets, data.imagenet_datasets])
def test_tfds_layouts_refuse_the_limits_the_other_layouts_refuse(tmp_path, loader, key, value):
    """Checked before the tfds directory is even looked at (it does not exist here)."""
    with pytest.raises(ValueError, match=f"`{key}` must be"):
        loader(str(tmp_path / "no_such_dir"), **{key: value})
    # The same value through the class-folder / array layout: refused alike.
    if key != "validation_size":
        with pytest.raises(ValueError, match=f"`{key}` must be"):
            data.array_datasets(_arrays(), "x", validation_size=2, **{key: value})


@pytest.mark.parametrize("mean, std", [((np.nan, 0.5, 0.5), (0.2, 0.2, 0.2)),
                                       ((0.5, 0.5, 0.5), (0.2, np.inf, 0.2)),
                                       ((0.5, 0.5, 0.5), (0.2, -0.1, 0.2)),
                                       (("0.5", "0.5", "0.5"), (0.2, 0.2, 0.2)),
                                       ((True, 0.5, 0.5), (0.2, 0.2, 0.2)),
                                       (0.5, 0.2)])  # fmt: skip
def test_normalisation_must_be_finite_numbers(mean, std):
    with pytest.raises(ValueError, match="`(mean|std)` must be"):
        data.array_datasets(_arrays(), "x", validation_size=2, mean=mean, std=std)


def _batch(path, labels, data_array=None):
    data_array = np.zeros((3, 3072), np.uint8) if data_array is None else data_array
    with open(path, "wb") as f:
        pickle.dump({b"data": data_array, b"labels": labels}, f)


@pytest.mark.parametrize("labels, found", [([0, 1.0, 2], "float 1.0"), ([0, True, 2], "bool True"),
                                           ([0, "1", 2], "str '1'"), ([0, 1, 10], "10"),
                                           (np.array([0, 1, 2], np.float32), "float32"),
                                           ({0: 1}, "dict"), (None, "NoneType"),
                                           ([0, 2**70, 1], str(2**70))])  # fmt: skip
def test_cifar_pickle_labels_must_be_integers(tmp_path, labels, found):
    path = tmp_path / "data_batch_1"
    _batch(path, labels)
    with pytest.raises(ValueError, match="integers in 0..9") as err:
        data.cifar10._read_batch(str(path))
    assert str(path) in str(err.value) and found in str(err.value)


def test_a_malformed_cifar_batch_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "data_batch_1"
    _batch(path, [0, 1, 2])
    good = path.read_bytes()
    for content in (good[: len(good) // 2], b"\x80\x04\x95garbage", good[:1] + b"\xff" * 40):
        path.write_bytes(content)
        with pytest.raises(ValueError, match="not a CIFAR-10 batch pickle") as err:
            data.cifar10._read_batch(str(path))
        assert str(path) in str(err.value)
    _batch(path, [0, 1], np.zeros((2, 3072), np.int64))  # not uint8
    with pytest.raises(ValueError, match=r"b'data' uint8 of shape \(n, 3072\), found int64"):
        data.cifar10._read_batch(str(path))


def test_a_huge_first_image_fails_on_its_header_naming_the_path(tmp_path):
    """A valid 9000×9000 PNG (81 M pixels, under MAX_PIXELS) first in a folder of more
    files than memory holds at that size: refused from its header, before any decoding or
    allocation (today a bare MemoryError from the array of all images)."""
    from pabt_tf.data.image_files import memory_bytes

    side = 9000
    count = int(memory_bytes() // side**2) + 2
    first = tmp_path / "train" / "a" / "000.png"
    first.parent.mkdir(parents=True)
    Image.new("L", (side, side)).save(first, optimize=False)
    small = io.BytesIO()
    Image.new("L", (2, 2)).save(small, format="png")
    for i in range(1, count):
        (tmp_path / "train" / "a" / f"{i:03d}.png").write_bytes(small.getvalue())
    with pytest.raises(ValueError, match="memory") as err:
        data.read_class_folders(str(tmp_path / "train"))
    assert str(first) in str(err.value) and "9000×9000" in str(err.value)


def test_a_data_set_of_one_class_is_refused(tmp_path):
    for split in ("train", "test"):
        for i in range(3):
            _png(tmp_path / split / "only" / f"{i}.png", np.full((4, 4, 3), i, np.uint8))
    with pytest.raises(ValueError, match="1 class.*at least 2"):
        data.image_folder_datasets(str(tmp_path), validation_size=1)


# -- part 9: EXIF orientation, every class in training ------------------------------------


def _exif_jpeg(image: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="jpeg", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_exif_orientation_is_applied_as_pil_does(tmp_path, orientation):
    # A 24×40 image with distinct quadrants: any wrong flip or turn shows.
    image = np.zeros((24, 40, 3), np.uint8)
    image[:12, :20] = (250, 10, 10)
    image[:12, 20:] = (10, 250, 10)
    image[12:, :20] = (10, 10, 250)
    image[12:, 20:] = (250, 250, 10)
    path = tmp_path / "train" / "c" / "photo.jpg"
    path.parent.mkdir(parents=True)
    path.write_bytes(_exif_jpeg(image, orientation))
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    decoded = image_folder._decode(str(path))
    assert decoded.shape == expected.shape  # (40, 24, 3) for the quarter turns 5..8
    assert np.abs(decoded.astype(int) - expected.astype(int)).mean() < 2.0


def test_jpeg_without_or_with_broken_exif_is_left_as_stored(tmp_path):
    from pabt_tf.data.image_files import jpeg_orientation

    image = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="jpeg")
    assert jpeg_orientation(buffer.getvalue()) == 1
    assert jpeg_orientation(_exif_jpeg(image, 6)) == 6
    broken = _exif_jpeg(image, 6).replace(b"Exif\0\0MM", b"Exif\0\0XX").replace(b"Exif\0\0II", b"Exif\0\0XX")
    assert jpeg_orientation(broken) == 1
    assert jpeg_orientation(b"\xff\xd8\xff\xe1\x00") == 1  # truncated


def test_the_validation_split_keeps_a_training_image_of_every_class():
    """Class 2 has one image; with a seed whose draw puts it into validation, today's
    split leaves the class without a training image. Now it is swapped back."""
    arrays = _arrays(n_per_class=(10, 10, 1))
    n, size = len(arrays.train_labels), 10
    lone = int(np.flatnonzero(arrays.train_labels == 2)[0])
    seed = next(s for s in range(100) if lone in np.random.default_rng(s).permutation(n)[:size])
    (tx, ty), (vx, vy) = data.split_train_validation(
        arrays.train_images, arrays.train_labels, size, seed, keep_classes=True)
    assert sorted(set(ty.tolist())) == [0, 1, 2] and len(vy) == size and len(ty) == n - size
    assert 2 not in vy.tolist()
    # The same draw otherwise: all but one validation example are the random ones.
    plain = data.split_train_validation(arrays.train_images, arrays.train_labels, size, seed)
    assert 2 in plain[1][1].tolist()
    same = {x.tobytes() for x in vx} & {x.tobytes() for x in plain[1][0]}
    assert len(same) == size - 1
    ds = data.array_datasets(arrays, "x", validation_size=size, seed=seed, augment=False)
    labels = np.concatenate([y.numpy() for _, y in ds.train])
    assert sorted(set(labels.tolist())) == [0, 1, 2]
    # When it cannot: fewer training images than classes left.
    with pytest.raises(ValueError, match="leaves 2 training example.*3 classes"):
        data.array_datasets(arrays, "x", validation_size=n - 2)


def test_the_fingerprint_follows_the_examples(tmp_path):
    arrays = _arrays()
    a = data.array_datasets(arrays, "x", validation_size=2).fingerprint
    assert len(a) == 16 and a == data.array_datasets(_arrays(), "x", validation_size=2).fingerprint
    changed = _arrays()
    changed.train_images[5, 0, 0, 0] ^= 1
    assert data.array_datasets(changed, "x", validation_size=2).fingerprint != a
    relabelled = _arrays()
    relabelled.train_labels[[0, 4]] = relabelled.train_labels[[4, 0]]
    assert data.array_datasets(relabelled, "x", validation_size=2).fingerprint != a
    fm = data.fashion_mnist_datasets(train_limit=10, validation_size=10, test_limit=10)
    assert fm.classes == data.FASHION_MNIST_CLASSES and len(fm.fingerprint) == 16
