"""Class-folder image data and CIFAR-10's offline layouts (`pabt_tf.data.image_folder`,
`pabt_tf.data.cifar10`), on small trees and pickles the tests write themselves: labels,
the seeded split, normalisation from the training split, augmentation of training batches
only, decoding once per process, read-only data, and every bad input."""

import io
import os
import pickle
import stat
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf

from pabt_tf import data
from pabt_tf.data import image_folder


def _write_image(path, image: np.ndarray, fmt: str = "png") -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    encode = tf.io.encode_png if fmt == "png" else lambda x: tf.io.encode_jpeg(x, quality=90)
    tf.io.write_file(str(path), encode(tf.constant(image)))


def _tree(root, classes=("cat", "ant", "bee"), per_class=(4, 2), shape=(8, 6, 3), seed=0):
    """train/<class>/i.png and test/<class>/i.png with random pixels; returns the images
    by split in sorted-class, sorted-file order (the order labels are given in)."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in zip(("train", "test"), per_class):
        images, labels = [], []
        for label, name in enumerate(sorted(classes)):
            for i in range(n):
                image = rng.integers(0, 256, shape, dtype=np.uint8)
                _write_image(os.path.join(root, split, name, f"{i:03d}.png"), image)
                images.append(image)
                labels.append(label)
        out[split] = (np.stack(images), np.array(labels, np.int32))
    return out


def _all(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_class_folders_labels_split_and_normalisation(tmp_path):
    written = _tree(tmp_path)
    images, labels, classes = data.read_class_folders(str(tmp_path / "train"))
    assert classes == ("ant", "bee", "cat")  # sorted: label = index of the sorted name
    np.testing.assert_array_equal(images, written["train"][0])
    np.testing.assert_array_equal(labels, written["train"][1])
    assert images.dtype == np.uint8

    ds = data.load_datasets("image_folder", data_dir=str(tmp_path), batch_size=5,
                            validation_size=3, seed=7, augment=False)
    assert (ds.train_size, ds.validation_size, ds.test_size) == (9, 3, 6)
    assert ds.input_shape == (8, 6, 3) and ds.num_classes == 3 and ds.classes == classes
    # The split is a random subset fixed by the seed, disjoint and complete.
    (tx, ty), (vx, vy) = data.split_train_validation(images, labels, 3, seed=7)
    # Normalisation uses the statistics of the training images that remain.
    mean, std = data.channel_statistics(tx)
    np.testing.assert_allclose(ds.mean, tx.reshape(-1, 3).mean(0) / 255, rtol=1e-9)
    np.testing.assert_allclose(ds.std, (tx.reshape(-1, 3) / 255).std(0), rtol=1e-9)
    assert ds.mean == mean and ds.std == std
    val_x, val_y = _all(ds.validation)
    np.testing.assert_allclose(val_x, (vx / 255 - np.array(mean)) / np.array(std), atol=1e-5)
    np.testing.assert_array_equal(val_y, vy)
    test_x, test_y = _all(ds.test)
    np.testing.assert_allclose(test_x, (written["test"][0] / 255 - mean) / std, atol=1e-5)
    np.testing.assert_array_equal(test_y, written["test"][1])
    # Training batches (unaugmented here) are the remaining images, shuffled.
    train_x, train_y = _all(ds.train)
    assert sorted(map(bytes, train_x.round(4))) == sorted(
        map(bytes, ((tx / 255 - mean) / std).astype(np.float32).round(4)))
    assert abs(train_x.mean()) < 1e-5 and abs(train_x.std() - 1) < 1e-4
    other = data.image_folder_datasets(str(tmp_path), validation_size=3, seed=8, augment=False)
    assert not np.array_equal(_all(other.validation)[0], val_x)


def test_augmentation_on_training_batches_only(tmp_path):
    _tree(tmp_path, per_class=(6, 2), shape=(12, 12, 3))
    plain = data.image_folder_datasets(str(tmp_path), batch_size=64, validation_size=4,
                                       augment=False, seed=1)
    aug = data.image_folder_datasets(str(tmp_path), batch_size=64, validation_size=4,
                                     augment=True, seed=1, crop_padding=4)
    for split in ("validation", "test"):
        np.testing.assert_array_equal(_all(getattr(plain, split))[0], _all(getattr(aug, split))[0])
    # Same shuffling seed: the same images in the same order, each cropped or flipped.
    px, py = _all(plain.train)
    ax, ay = _all(aug.train)
    np.testing.assert_array_equal(py, ay)
    assert ax.shape == px.shape
    changed = [not np.array_equal(a, p) for a, p in zip(ax, px)]
    assert sum(changed) >= len(changed) // 2
    # A crop/flip moves pixels: zero padding (normalised) appears, or a flip matches.
    pad_value = (0 - np.array(aug.mean)) / np.array(aug.std)
    for a, p in zip(ax, px):
        if not np.array_equal(a, p):
            padded = np.isclose(a, pad_value, atol=1e-5).all(-1).any()
            flipped = np.allclose(a, p[:, ::-1], atol=1e-6)
            shifted = any(np.allclose(a[dy:, dx:], p[: 12 - dy, : 12 - dx], atol=1e-6)
                          or np.allclose(a[: 12 - dy, : 12 - dx], p[dy:, dx:], atol=1e-6)
                          for dy in range(5) for dx in range(5))
            assert padded or flipped or shifted
    # A new epoch draws new crops.
    ax2, _ = _all(aug.train)
    assert not np.array_equal(ax, ax2)


def test_decoded_once_per_process_and_again_when_a_file_changes(tmp_path, monkeypatch):
    _tree(tmp_path, per_class=(2, 1))
    calls = []
    real = image_folder._decode
    monkeypatch.setattr(image_folder, "_decode", lambda p: calls.append(p) or real(p))
    image_folder._DECODED.clear()
    data.load_image_folder(str(tmp_path))
    assert len(calls) == 9  # 3 classes x (2 train + 1 test)
    data.image_folder_datasets(str(tmp_path), validation_size=1, seed=0)
    data.image_folder_datasets(str(tmp_path), validation_size=2, seed=1)
    assert len(calls) == 9  # every later pipeline reuses the decoded arrays
    path = tmp_path / "train" / "ant" / "000.png"
    _write_image(path, np.zeros((8, 6, 3), np.uint8))
    os.utime(path, ns=(1, 1))  # a changed file is seen even with a coarse clock
    arrays = data.load_image_folder(str(tmp_path))
    assert len(calls) == 9 + 6  # the changed train split is decoded again, test is not
    assert not arrays.train_images[0].any()


def test_jpeg_decoding_is_accurate_and_grayscale_works(tmp_path):
    rng = np.random.default_rng(0)
    smooth = np.repeat(np.repeat(rng.integers(0, 256, (4, 4, 1), dtype=np.uint8), 4, 0), 4, 1)
    for split in ("train", "test"):
        for name in ("a", "b"):
            _write_image(tmp_path / split / name / "x.jpg", smooth, fmt="jpeg")
    arrays = data.load_image_folder(str(tmp_path))
    assert arrays.train_images.shape == (2, 16, 16, 1)
    content = tf.io.read_file(str(tmp_path / "train" / "a" / "x.jpg"))
    accurate = tf.io.decode_jpeg(content, dct_method="INTEGER_ACCURATE").numpy()
    np.testing.assert_array_equal(arrays.train_images[0], accurate)
    ds = data.image_folder_datasets(str(tmp_path), validation_size=0, batch_size=2)
    assert ds.input_shape == (16, 16, 1)


def _cifar_pickles(folder, n=4, seed=0):
    """data_batch_1..5 and test_batch as the official pickles hold them (channel-major
    rows of 3072 bytes); returns the images as (n, 32, 32, 3) per file."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    images = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rows = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": rows,
                         b"filenames": [b"x.png"] * n}, f, protocol=2)
        images[name] = (rows.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1), labels)
    return images


def test_cifar10_pickles_layout(tmp_path):
    written = _cifar_pickles(tmp_path / "cifar-10-batches-py")
    assert data.cifar10_layout(str(tmp_path)) == ("pickles", str(tmp_path / "cifar-10-batches-py"))
    arrays = data.read_cifar10_pickles(str(tmp_path / "cifar-10-batches-py"))
    assert arrays.train_images.shape == (20, 32, 32, 3) and arrays.test_images.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(arrays.train_images[4:8], written["data_batch_2"][0])
    np.testing.assert_array_equal(arrays.test_labels, written["test_batch"][1])
    # Pixel (row 1, column 2, green) is byte 1024 + 1*32 + 2 of its row.
    raw = pickle.load(open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb"), encoding="bytes")
    assert arrays.test_images[0, 1, 2, 1] == raw[b"data"][0, 1024 + 32 + 2]
    ds = data.load_datasets("cifar10", data_dir=str(tmp_path), validation_size=5, batch_size=8,
                            augment=False)
    assert (ds.train_size, ds.validation_size, ds.test_size, ds.name) == (15, 5, 4, "cifar10")
    assert ds.classes == data.CIFAR10_CLASSES and ds.input_shape == (32, 32, 3)


def test_cifar10_pickle_that_would_run_code_is_refused(tmp_path):
    _cifar_pickles(tmp_path)
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(tmp_path / "data_batch_3", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(ValueError, match=r"data_batch_3.*refusing to load global"):
        data.load_datasets("cifar10", data_dir=str(tmp_path))
    assert not marker.exists()
    with open(tmp_path / "data_batch_3", "wb") as f:
        f.write(b"not a pickle")
    with pytest.raises(ValueError, match=r"data_batch_3: not a CIFAR-10 batch"):
        data.load_datasets("cifar10", data_dir=str(tmp_path))
    _cifar_pickles(tmp_path)
    os.remove(tmp_path / "test_batch")
    with pytest.raises(FileNotFoundError, match="test_batch"):
        data.read_cifar10_pickles(str(tmp_path))


def test_cifar10_class_folder_layout_checks_classes_and_shape(tmp_path):
    _tree(tmp_path / "ok", classes=data.CIFAR10_CLASSES, per_class=(2, 1), shape=(32, 32, 3))
    ds = data.load_datasets("cifar10", data_dir=str(tmp_path / "ok"), validation_size=4,
                            batch_size=8)
    assert (ds.train_size, ds.validation_size, ds.test_size) == (16, 4, 10)
    assert data.cifar10_layout(str(tmp_path / "ok"))[0] == "class_folders"
    x, y = next(iter(ds.train))
    assert x.shape == (8, 32, 32, 3) and x.dtype == tf.float32 and y.dtype == tf.int32
    _tree(tmp_path / "small", classes=data.CIFAR10_CLASSES, per_class=(1, 1), shape=(16, 16, 3))
    with pytest.raises(ValueError, match=r"small.*32×32×3.*image_folder"):
        data.cifar10_datasets(str(tmp_path / "small"))
    renamed = tuple(c.upper() for c in data.CIFAR10_CLASSES)
    _tree(tmp_path / "names", classes=renamed, per_class=(1, 1), shape=(32, 32, 3))
    with pytest.raises(ValueError, match=r"names: expected CIFAR-10's class folders"):
        data.cifar10_datasets(str(tmp_path / "names"))


def _expect(path_fragment, exc, match, root):
    with pytest.raises(exc, match=match) as err:
        data.image_folder_datasets(str(root), validation_size=0)
    assert path_fragment in str(err.value)


def test_bad_trees_are_clear_errors_naming_the_path(tmp_path):
    image_folder._DECODED.clear()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.image_folder_datasets(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="data_dir"):
        data.load_datasets("image_folder", data_dir=None)
    os.makedirs(tmp_path / "no_test" / "train" / "a")
    _expect(str(tmp_path / "no_test" / "train" / "a"), ValueError, "has no image files",
            tmp_path / "no_test")
    _write_image(tmp_path / "no_test" / "train" / "a" / "1.png", np.zeros((4, 4, 3), np.uint8))
    _expect(str(tmp_path / "no_test" / "test"), FileNotFoundError, "no such folder",
            tmp_path / "no_test")
    os.makedirs(tmp_path / "no_classes" / "train")
    _expect("no_classes", ValueError, "no class folders", tmp_path / "no_classes")

    def fresh(name):
        root = tmp_path / name
        _tree(root, per_class=(2, 1), shape=(4, 4, 3))
        return root

    root = fresh("corrupt")
    (root / "train" / "bee" / "001.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    _expect(str(root / "train" / "bee" / "001.png"), ValueError, "not a decodable image", root)
    root = fresh("text")
    (root / "test" / "ant" / "notes.txt").write_text("hello")
    _expect(str(root / "test" / "ant" / "notes.txt"), ValueError, "not a decodable image", root)
    root = fresh("sizes")
    _write_image(root / "train" / "cat" / "001.png", np.zeros((5, 4, 3), np.uint8))
    _expect(str(root / "train" / "cat" / "001.png"), ValueError, "same height, width", root)
    root = fresh("test_size")
    for f in (root / "test").rglob("*.png"):
        _write_image(f, np.zeros((4, 4, 1), np.uint8))
    _expect(str(root), ValueError, "train images are", root)
    root = fresh("classes")
    os.rename(root / "test" / "bee", root / "test" / "wasp")
    _expect(str(root), ValueError, r"only in train \['bee'\], only in test \['wasp'\]", root)
    root = fresh("stray")
    _write_image(root / "train" / "loose.png", np.zeros((4, 4, 3), np.uint8))
    _expect(str(root / "train"), ValueError, "expected only class folders", root)
    # Argument errors come before any file is read.
    with pytest.raises(ValueError, match="batch_size"):
        data.image_folder_datasets(str(tmp_path / "missing"), batch_size=0)
    with pytest.raises(TypeError, match="unknown data set argument"):
        data.image_folder_datasets(str(tmp_path / "missing"), batchsize=3)
    with pytest.raises(ValueError, match="validation_size"):
        data.image_folder_datasets(str(fresh("val")), validation_size=6)


def test_linked_folders_are_read_and_links_that_cannot_be_are_errors(tmp_path):
    """A class assembled from symbolic links to folders keeps their images (not skipped
    silently, as a walk that does not follow links would); a link loop, a dangling link
    and a FIFO (reading it would block forever) are errors naming the path."""
    image_folder._DECODED.clear()
    root = tmp_path / "linked"
    arrays = _tree(root, per_class=(2, 1), shape=(4, 4, 3))
    extra = tmp_path / "elsewhere"
    for i in range(3):
        _write_image(extra / f"{i}.png", np.full((4, 4, 3), 7 * i, np.uint8))
    os.symlink(extra, root / "train" / "ant" / "more")
    images, labels, _ = data.read_class_folders(str(root / "train"))
    assert len(images) == len(arrays["train"][0]) + 3 and np.sum(labels == 0) == 2 + 3  # 'ant' is 0
    ds = data.image_folder_datasets(str(root), validation_size=0)
    assert ds.train_size == len(images)

    os.symlink(root / "train" / "ant", extra / "back")  # ant/more/back -> ant
    _expect(str(root / "train" / "ant" / "more" / "back"), ValueError, "symbolic link loop", root)
    os.remove(extra / "back")
    os.symlink(tmp_path / "nowhere.png", root / "train" / "bee" / "gone.png")
    _expect(str(root / "train" / "bee" / "gone.png"), ValueError, "not a regular file", root)
    os.remove(root / "train" / "bee" / "gone.png")
    os.mkfifo(root / "test" / "cat" / "pipe.png")
    _expect(str(root / "test" / "cat" / "pipe.png"), ValueError, "not a regular file", root)


def _png_declaring(height: int, width: int) -> bytes:
    """A valid PNG header declaring `height`×`width` gray pixels, with a few rows of
    zeros: a few kilobytes that would decode to `height * width` bytes."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(
            ">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1) * 4, 9)) + chunk(b"IEND", b""))


def test_image_declaring_too_many_pixels_is_refused_before_decoding(tmp_path):
    """A decompression bomb (a small file declaring billions of pixels) is an error naming
    the path, raised from the header, not an exhausted machine; the header sizes read
    for that agree with the decoded images of every format."""
    import PIL.Image

    image = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    for fmt in ("PNG", "GIF", "BMP", "JPEG"):
        buffer = io.BytesIO()
        PIL.Image.fromarray(image).save(buffer, fmt)
        assert image_folder._declared_size(buffer.getvalue()) == (7, 5), fmt
    assert image_folder._declared_size(b"not an image") is None

    image_folder._DECODED.clear()
    root = tmp_path / "bomb"
    _tree(root, per_class=(2, 1), shape=(4, 4, 3))
    side = 100_000  # 10^10 pixels: 10 GB once decoded
    (root / "train" / "bee" / "big.png").write_bytes(_png_declaring(side, side))
    assert (root / "train" / "bee" / "big.png").stat().st_size < 100_000
    _expect(str(root / "train" / "bee" / "big.png"), ValueError, "100000×100000 pixels, more than MAX_PIXELS", root)


def _snapshot(root):
    return sorted((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*"))


def test_read_only_data_directory_is_read_and_never_written(tmp_path):
    root = tmp_path / "data"
    _tree(root, per_class=(2, 1))
    _cifar_pickles(root / "pickles" / "cifar-10-batches-py")
    for p in [root, *root.rglob("*")]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    before = _snapshot(root)
    try:
        image_folder._DECODED.clear()
        ds = data.image_folder_datasets(str(root), validation_size=1, batch_size=4)
        _all(ds.train), _all(ds.test)
        data.cifar10_datasets(str(root / "pickles"), validation_size=2)
        assert _snapshot(root) == before
    finally:
        for p in [root, *root.rglob("*")]:
            p.chmod(p.stat().st_mode | stat.S_IWUSR)


def test_train_runs_on_an_image_folder(tmp_path):
    from experiments import train as train_lib

    _tree(tmp_path / "data", per_class=(12, 4), shape=(16, 16, 3))
    result = train_lib.train(dict(
        dataset="image_folder", data_dir=str(tmp_path / "data"), model="fmnist_resnet",
        method="pabt", epochs=2, batch_size=8, validation_size=6, verify_samples=4,
        prune_order="activation_bases", output_dir=str(tmp_path / "run"), save_model=False,
        verbose=0, weight_bases=2, activation_bases=2,
        model_kwargs={"stem_filters": 8, "stage_filters": [8, 16], "blocks_per_stage": [1, 1]},
    ))
    assert result["config"]["dataset"] == "image_folder" and result["train_size"] == 30
    assert result["mean_binary_convs"] == 1.0
    assert result["verification"]["top1_agreement"] == 1.0
    assert result["found_bconvs"] == 4
    assert len(result["normalization"]["mean"]) == 3
