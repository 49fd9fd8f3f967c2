"""What is read of one image file before and beside decoding it: the size its header
declares (so a decompression bomb or images too large for memory fail on the header),
the file-size and pixel limits, and a JPEG's EXIF orientation with the transform that
shows its pixels upright (what `PIL.ImageOps.exif_transpose` does: cameras and phones
store pixels as the sensor saw them and record the rotation in EXIF tag 0x0112, which
TensorFlow's JPEG decoder ignores). No image library is needed."""

from __future__ import annotations

import os
import struct

import numpy as np
import tensorflow as tf

__all__ = [
    "MAX_PIXELS",
    "MAX_FILE_BYTES",
    "declared_size",
    "read_image_file",
    "memory_bytes",
    "check_fits",
    "jpeg_orientation",
    "apply_orientation",
]


# Pillow's decompression-bomb limit: a few kilobytes can declare billions of pixels,
# and decoding them would exhaust memory instead of raising.
MAX_PIXELS = 89_478_485


def declared_size(content: bytes) -> tuple[int, int] | None:
    """`(height, width)` from an image file's header, without decoding it; `None` when the
    header is not one this reads (the decoder then reports the file)."""
    if content[:8] == b"\x89PNG\r\n\x1a\n" and len(content) >= 24:
        width, height = struct.unpack(">II", content[16:24])
    elif content[:6] in (b"GIF87a", b"GIF89a") and len(content) >= 10:
        width, height = struct.unpack("<HH", content[6:10])
    elif content[:2] == b"BM" and len(content) >= 26:
        if struct.unpack("<I", content[14:18])[0] == 12:  # OS/2 header: 16-bit sizes
            width, height = struct.unpack("<HH", content[18:22])
        else:
            width, height = struct.unpack("<ii", content[18:26])
    elif content[:3] == b"\xff\xd8\xff":
        try:
            height, width, _ = (int(v) for v in tf.io.extract_jpeg_shape(content).numpy())
        except tf.errors.InvalidArgumentError:
            return None
    else:
        return None
    return abs(height), abs(width)  # a BMP stored top-down has a negative height


# The largest image file read: a MAX_PIXELS image as uncompressed 32-bit BMP, and more.
MAX_FILE_BYTES = 4 * MAX_PIXELS + (1 << 20)


def read_image_file(path: str) -> bytes:
    size = os.path.getsize(path)
    if size > MAX_FILE_BYTES:
        raise ValueError(
            f"{path}: a file of {size:,} bytes, more than any image of MAX_PIXELS = "
            f"{MAX_PIXELS:,} pixels needs ({MAX_FILE_BYTES:,}); not read."
        )
    with open(path, "rb") as f:
        return f.read()


def memory_bytes() -> float:
    """This machine's physical memory (infinite where it cannot be read)."""
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return float("inf")


def check_fits(path: str, shape: tuple[int, ...], count: int, what: str) -> None:
    """Refuse `count` uint8 images of `shape` (from `path`) that cannot fit in memory."""
    need = count * int(np.prod(shape, dtype=np.float64))
    if need > memory_bytes():
        raise ValueError(
            f"{path}: {what} {'×'.join(map(str, shape))}; {count} images of that size need "
            f"{need / 2**30:.1f} GiB as uint8, more than this machine's "
            f"{memory_bytes() / 2**30:.1f} GiB of memory. Resize the images first."
        )


_ORIENTATION_TAG = 0x0112


def jpeg_orientation(content: bytes) -> int:
    """The EXIF orientation (1..8) of a JPEG file's bytes; 1 (upright) when it has none or
    its EXIF block is malformed (a bad tag is not a reason to refuse the image)."""
    i = 2  # after SOI
    while i + 4 <= len(content):
        if content[i] != 0xFF:
            return 1
        marker = content[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            i += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan / end of image: no EXIF before it
            return 1
        length = int.from_bytes(content[i + 2 : i + 4], "big")
        if marker == 0xE1 and content[i + 4 : i + 10] == b"Exif\0\0":
            return _tiff_orientation(content[i + 10 : i + 2 + length])
        i += 2 + length
    return 1


def _tiff_orientation(tiff: bytes) -> int:
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    offset = struct.unpack(order + "I", tiff[4:8])[0]  # IFD0
    if offset + 2 > len(tiff):
        return 1
    (count,) = struct.unpack(order + "H", tiff[offset : offset + 2])
    for k in range(count):
        entry = offset + 2 + 12 * k
        if entry + 12 > len(tiff):
            break
        tag, kind = struct.unpack(order + "HH", tiff[entry : entry + 4])
        if tag == _ORIENTATION_TAG and kind == 3:  # SHORT, stored in the entry itself
            (value,) = struct.unpack(order + "H", tiff[entry + 8 : entry + 10])
            return value if 1 <= value <= 8 else 1
    return 1


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """`image` (`(height, width, channels)`, as stored) shown upright for its EXIF
    `orientation`: flipped and/or rotated by quarter turns (2..8; 1 = unchanged)."""
    transforms = {
        2: lambda a: a[:, ::-1],  # mirrored
        3: lambda a: a[::-1, ::-1],  # rotated 180°
        4: lambda a: a[::-1],  # mirrored vertically
        5: lambda a: a.swapaxes(0, 1),  # transposed
        6: lambda a: np.rot90(a, -1),  # rotated 90° clockwise to be upright
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),  # transversed
        8: lambda a: np.rot90(a, 1),  # rotated 90° counter-clockwise to be upright
    }
    transform = transforms.get(orientation)
    return image if transform is None else np.ascontiguousarray(transform(image))
