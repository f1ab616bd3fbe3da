"""Datasets by name: `load_dataset("digits")`, `load_dataset("imagewoof", root="/data/imagenet")`."""

from __future__ import annotations

from pathlib import Path

import rdistill.data.sources as sources
import rdistill.data.subsets as subsets
from rdistill.data.base import Dataset
from rdistill.data.imagenet import IMAGENET_WNIDS, SUBSETS

# The names load_dataset knows, for --help text.
DATASETS: tuple[str, ...] = ("digits", "fashion-mnist", "imagefolder:PATH", *SUBSETS, "imagenet1k",
                             *subsets.NAMED, "NAME[class,...]")
_IMAGEFOLDER = "imagefolder:"


def load_dataset(name: str, image_size: int | None = None, root: str | Path | None = None) -> Dataset:
    """The dataset called `name` (one of DATASETS), its images at `image_size` (None: its native size).

    - digits: scikit-learn's 8x8 digits (no root), seeded stratified 25% test split.
    - fashion-mnist: IDX files in root (default /usr/share/datasets/fashion-mnist).
    - imagefolder:PATH: PATH/<class>/<images> (or train/ + val/ or test/), RGB; by default at the size its
      images share, or 256x256 when their sizes differ.
    - imagewoof, imagenette, imageidc, imagenet1k: root = an ImageNet root with train/<wnid>/ and
      val/<wnid>/; 256x256 RGB by default.
    - NAME[class,...] (names or indices) and fashion-tops: a class subset that keeps the parent's model
      labels (rdistill.data.subsets).
    """
    if image_size is not None and (type(image_size) is not int or image_size < 1):
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")
    base, classes = subsets.parse(name)
    if classes is not None:
        return subsets.class_subset(load_dataset(base, image_size, root), classes, name)
    if name == "digits":
        if root is not None:
            raise ValueError(f"digits ships with scikit-learn and takes no root, got root={root!r}")
        return sources.digits(image_size)
    if name == "fashion-mnist":
        return sources.fashion_mnist(root, image_size)
    if name.startswith(_IMAGEFOLDER):
        path = name[len(_IMAGEFOLDER) :]
        if not path:
            raise ValueError(f"{name!r}: give the folder as imagefolder:PATH")
        if root is not None:
            raise ValueError(f"{name!r} names its folder itself; root must be None, got {root!r}")
        return sources.image_folder(path, image_size)
    if name in SUBSETS or name == "imagenet1k":
        if root is None:
            raise ValueError(f"{name} needs root=<ImageNet root holding train/<wnid>/ and val/<wnid>/>")
        wnids = SUBSETS[name] if name in SUBSETS else IMAGENET_WNIDS
        return sources.imagenet(name, wnids, root, image_size)
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
