"""The two types every stage shares: a labelled split of images, and a dataset of two splits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch


@dataclass(frozen=True)
class Split:
    """N labelled images, held in memory (small datasets) or as files on disk (ImageNet, folders).

    Exactly one of `pixels` and `paths` is set. Every image comes out as a float tensor
    (channels, image_size, image_size) in [-1, 1]; files are center-cropped and resized on read.
    """

    labels: torch.Tensor  # (N,) int64, the dataset's class index 0..K-1
    image_size: int
    channels: int
    pixels: torch.Tensor | None = None  # (N, C, S, S) uint8
    paths: tuple[Path, ...] | None = None

    def __post_init__(self):
        if (self.pixels is None) == (self.paths is None):
            raise ValueError("a Split holds either pixels or paths, exactly one of them")
        n = len(self.pixels) if self.pixels is not None else len(self.paths)
        if n != len(self.labels):
            raise ValueError(f"{n} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def images(self, idx: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """(len(idx), C, S, S) float in [-1, 1]."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        if self.pixels is not None:
            return self.pixels[idx].float() / 127.5 - 1.0
        from rdistill.data.files import read_image

        return torch.stack([read_image(self.paths[i], self.image_size, self.channels) for i in idx.tolist()])

    def indices_of(self, k: int) -> torch.Tensor:
        """Indices of the images of class k."""
        return torch.nonzero(self.labels == k).flatten()


@dataclass(frozen=True)
class Dataset:
    """A named dataset: class names, the model label of each class, a train and a test split."""

    name: str
    classes: tuple[str, ...]  # class names (WNIDs for ImageNet datasets)
    model_labels: tuple[int, ...]  # the DiT class label of each class (ImageNet index for ImageNet)
    train: Split
    test: Split
    hflip: bool  # whether a horizontal flip keeps an image in its class

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return self.train.image_size

    @property
    def channels(self) -> int:
        return self.train.channels
