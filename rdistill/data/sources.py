"""One loader per kind of dataset, each returning a `Dataset` (see registry.load_dataset for the names).

In-memory datasets (digits, Fashion-MNIST) hold uint8 pixels; folder datasets (image folders,
ImageNet) hold file paths that `Split.images` reads and center-crops on demand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from rdistill.data.base import Dataset, Split
from rdistill.data.files import class_folders, common_size, list_images, read_idx
from rdistill.data.imagenet import class_name, imagenet_label, is_imagenet_wnid

FOLDER_IMAGE_SIZE = 256  # SPEC.md section 1: DiT-XL/2 at 256x256; folders of mixed sizes default to it
FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist
# The official class names, in label order (zalandoresearch/fashion-mnist README).
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def resize_pixels(pixels: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """(N, C, H, W) uint8 -> (N, C, size, size) uint8: bilinear with antialias (area-like when shrinking,
    plain bilinear when enlarging), rounded back to uint8. Returns the input when it is already that size."""
    if pixels.shape[-2:] == (size, size):
        return pixels
    out = [
        F.interpolate(p.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        .round()
        .clamp(0, 255)
        .to(torch.uint8)
        for p in pixels.split(chunk)
    ]
    return torch.cat(out)


def _pixel_split(images: np.ndarray, labels: np.ndarray, image_size: int) -> Split:
    x = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1)  # (N, 1, H, W) uint8
    return Split(
        labels=torch.from_numpy(labels.astype(np.int64)),
        image_size=image_size,
        channels=1,
        pixels=resize_pixels(x, image_size),
    )


def digits(image_size: int | None = None) -> Dataset:
    """scikit-learn's 8x8 handwritten digits (1797 images, values 0..16 scaled to 0..255).

    No official split: a stratified 25% test split with seed 0 (train >= 130 images per class).
    image_size None keeps 8x8; another size resizes with `resize_pixels`.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8)
    y = d.target.astype(np.int64)
    tr, te = train_test_split(np.arange(len(y)), test_size=0.25, random_state=0, stratify=y)
    tr, te = np.sort(tr), np.sort(te)
    s = image_size or 8
    return Dataset(
        name="digits",
        classes=tuple(str(k) for k in range(10)),
        model_labels=tuple(range(10)),
        train=_pixel_split(x[tr], y[tr], s),
        test=_pixel_split(x[te], y[te], s),
        hflip=False,  # a mirrored 2, 3, 7 is not a digit
    )


def _find_idx(root: Path, stem: str) -> Path:
    for p in (root / stem, root / f"{stem}.gz"):
        if p.is_file():
            return p
    raise FileNotFoundError(
        f"{root / stem}[.gz] not found. Install the data with `apt-get install -y dataset-fashion-mnist` "
        f"(puts it in {FASHION_MNIST_ROOT}) or pass root=<folder holding the four IDX files>"
    )


def fashion_mnist(root: str | Path | None = None, image_size: int | None = None) -> Dataset:
    """Fashion-MNIST from its four IDX files (plain or .gz) in `root`; the official 60000/10000 split."""
    root = Path(root) if root is not None else FASHION_MNIST_ROOT
    splits = {}
    for split, (img_stem, lbl_stem) in _FASHION_FILES.items():
        img_path, lbl_path = _find_idx(root, img_stem), _find_idx(root, lbl_stem)
        x, y = read_idx(img_path, ndim=3), read_idx(lbl_path, ndim=1)  # (N, H, W), (N,)
        if x.dtype != np.uint8 or x.shape[1] != x.shape[2] or len(x) != len(y):
            raise ValueError(f"{img_path}: {x.dtype} images of shape {x.shape} do not match {len(y)} labels")
        if y.size and (y.min() < 0 or y.max() >= len(FASHION_MNIST_CLASSES)):
            raise ValueError(f"{lbl_path}: labels must be 0..9, found {int(y.min())}..{int(y.max())}")
        splits[split] = _pixel_split(x, y, image_size or x.shape[1])
    return Dataset(
        name="fashion-mnist",
        classes=FASHION_MNIST_CLASSES,
        model_labels=tuple(range(10)),
        train=splits["train"],
        test=splits["test"],
        hflip=True,  # a mirrored shoe or shirt is still one
    )


def _path_split(files: Sequence[Sequence[Path]], image_size: int) -> Split:
    """A Split of RGB image files, `files[k]` being the files of class k."""
    labels = torch.cat([torch.full((len(f),), k, dtype=torch.long) for k, f in enumerate(files)])
    return Split(labels=labels, image_size=image_size, channels=3, paths=tuple(p for f in files for p in f))


def _holdout(files: Sequence[Path], frac: float, rng: np.random.Generator) -> tuple[list[Path], list[Path]]:
    """(train, test) files of one class: a random round(frac * n) (at least 1) go to test."""
    n_test = max(1, round(frac * len(files)))
    if n_test >= len(files):
        raise ValueError(f"{files[0].parent} has {len(files)} image(s); holding out {n_test} for test leaves none")
    test = set(rng.permutation(len(files))[:n_test].tolist())
    return [f for i, f in enumerate(files) if i not in test], [f for i, f in enumerate(files) if i in test]


def image_folder(path: str | Path, image_size: int | None = None, holdout: float = 0.1, seed: int = 0) -> Dataset:
    """PATH/<class>/<images>, or PATH/train/<class>/ with PATH/val/<class>/ or PATH/test/<class>/.

    Without split folders the test split is a seeded `holdout` fraction of each class. Classes are the
    folder names sorted; if all are ImageNet-1K WNIDs, each class's model label is its ImageNet index.
    `image_size` None: the folder's own size (`folder_image_size`).
    """
    path = Path(path)
    s = image_size or folder_image_size(path)
    has = {d: (path / d).is_dir() for d in ("train", "val", "test")}
    if has["val"] and has["test"]:
        raise ValueError(f"{path} has both val/ and test/; point imagefolder: at a folder with train/ and one of them")
    if has["train"] and (has["val"] or has["test"]):
        test_dir = path / ("val" if has["val"] else "test")
        classes, test_classes = class_folders(path / "train"), class_folders(test_dir)
        if test_classes != classes:
            odd = sorted(set(test_classes) ^ set(classes))
            raise ValueError(f"{path / 'train'} and {test_dir} hold different classes: {odd[:10]}")
        train = _path_split([list_images(path / "train" / c) for c in classes], s)
        test = _path_split([list_images(test_dir / c) for c in classes], s)
    else:
        classes = class_folders(path)
        rng = np.random.default_rng(seed)
        parts = [_holdout(list_images(path / c), holdout, rng) for c in classes]
        train = _path_split([p[0] for p in parts], s)
        test = _path_split([p[1] for p in parts], s)
    wnids = all(is_imagenet_wnid(c) for c in classes)
    return Dataset(
        name=f"imagefolder:{path}",
        classes=classes,
        model_labels=tuple(imagenet_label(c) for c in classes) if wnids else tuple(range(len(classes))),
        train=train,
        test=test,
        hflip=True,  # natural photographs
    )


def folder_files(path: str | Path) -> list[Path]:
    """Every image file of an image folder (either layout), class by class."""
    path = Path(path)
    tops = [path / d for d in ("train", "val", "test") if (path / d).is_dir()] or [path]
    return [f for top in tops for c in class_folders(top) for f in list_images(top / c)]


def folder_image_size(path: str | Path) -> int:
    """An image folder's own size: the side of its images when all share one size (a non-square size gives
    its shorter side, what the center crop keeps), else FOLDER_IMAGE_SIZE."""
    return common_size(folder_files(path)) or FOLDER_IMAGE_SIZE


def imagenet(name: str, wnids: Sequence[str], root: str | Path, image_size: int | None = None) -> Dataset:
    """The classes `wnids` (in that order) of an ImageNet root holding train/<wnid>/ and val/<wnid>/.

    The val images (50 per class) are the test split; model labels are the ImageNet indices.
    """
    root = Path(root)
    for d in (root, root / "train", root / "val"):
        if not d.is_dir():
            raise FileNotFoundError(f"{name}: {d} does not exist; root must hold train/<wnid>/ and val/<wnid>/")
    missing = [(root / split / w, w) for split in ("train", "val") for w in wnids if not (root / split / w).is_dir()]
    if missing:
        listed = "; ".join(f"{p} (class {w}, {class_name(w)})" for p, w in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise FileNotFoundError(
            f"{name}: missing class folder(s) {listed}{more}. The val split must be sorted into val/<wnid>/ folders"
        )
    s = image_size or FOLDER_IMAGE_SIZE
    return Dataset(
        name=name,
        classes=tuple(wnids),
        model_labels=tuple(imagenet_label(w) for w in wnids),
        train=_path_split([list_images(root / "train" / w) for w in wnids], s),
        test=_path_split([list_images(root / "val" / w) for w in wnids], s),
        hflip=True,  # SPEC.md section 1: random horizontal flip
    )
