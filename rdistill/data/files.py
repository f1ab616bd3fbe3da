"""Reading dataset files: one image file -> a tensor, an IDX file -> an array, a class folder -> its images."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

# The suffixes counted as images in a class folder (any case); other files (README, .DS_Store) are skipped.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})

_PIL_MODE = {1: "L", 3: "RGB"}
# IDX element types by their code in byte 3 of the magic number (big-endian on disk).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def center_crop(im: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size`, then crop the central size x size square.

    The DiT/ADM center crop: halve with a box filter while the shorter side is >= 2 * size (cheap,
    alias-free), resize with bicubic to the exact scale, crop at the floor of the centre offset.
    """
    while min(im.size) >= 2 * size:
        im = im.resize(tuple(x // 2 for x in im.size), resample=Image.BOX)
    scale = size / min(im.size)
    im = im.resize(tuple(round(x * scale) for x in im.size), resample=Image.BICUBIC)
    left, top = (im.size[0] - size) // 2, (im.size[1] - size) // 2
    return im.crop((left, top, left + size, top + size))


def read_image(path: str | Path, image_size: int, channels: int) -> torch.Tensor:
    """(channels, image_size, image_size) float in [-1, 1]: the image at `path`, center-cropped.

    channels 3 converts to RGB, 1 to grayscale (L). A file PIL cannot decode raises ValueError naming it.
    """
    if channels not in _PIL_MODE:
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    try:
        with Image.open(path) as im:
            im = im.convert(_PIL_MODE[channels])  # decodes the whole file: truncation fails here
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e
    arr = np.asarray(center_crop(im, image_size), dtype=np.uint8).reshape(image_size, image_size, channels)
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1)  # (C, S, S) uint8
    return x.float() / 127.5 - 1.0


def common_size(paths) -> int | None:
    """The side a center crop keeps (min(width, height)) when every image in `paths` has the same size, else
    None. Reads only the headers, and stops at the first image of another size."""
    first = None
    for p in paths:
        try:
            with Image.open(p) as im:
                size = im.size  # (width, height), from the header
        except (OSError, SyntaxError, ValueError) as e:
            raise ValueError(f"cannot read image {p}: {e}") from e
        if first is None:
            first = size
        elif size != first:
            return None
    return min(first) if first else None


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """The array in an IDX file (the MNIST format), plain or gzipped; `ndim` is the expected rank.

    Layout: magic (0, 0, type code, ndim), ndim big-endian int32 sizes, then the data row-major.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except gzip.BadGzipFile as e:
        raise ValueError(f"{path} is not a valid gzip file: {e}") from e
    magic = raw[:4]
    if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] not in _IDX_DTYPES or magic[3] != ndim:
        raise ValueError(
            f"{path}: bad IDX magic number {magic.hex()!r}; expected 0000 + type code + {ndim:02x} "
            f"(e.g. {0x0800 + ndim:08x} for uint8)"
        )
    dtype = np.dtype(_IDX_DTYPES[magic[2]])
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - offset != expected:
        raise ValueError(f"{path}: header says shape {shape} ({expected} bytes) but it holds {len(raw) - offset}")
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def class_folders(root: str | Path) -> tuple[str, ...]:
    """The names of the (non-hidden) subfolders of `root`, sorted: the classes of an image folder."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    names = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not names:
        raise ValueError(f"{root} has no class subfolders; expected {root}/<class>/<image files>")
    return tuple(names)


def list_images(folder: str | Path) -> tuple[Path, ...]:
    """The image files directly in `folder`, sorted by name; a folder without any raises ValueError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"class folder {folder} does not exist")
    names = sorted(
        e.name for e in os.scandir(folder) if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
    )
    if not names:
        raise ValueError(f"class folder {folder} holds no images (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return tuple(folder / n for n in names)
