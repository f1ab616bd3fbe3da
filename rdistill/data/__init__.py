"""Datasets: `load_dataset(name, image_size, root) -> Dataset` (names in DATASETS); ImageNet class identity."""

from rdistill.data.base import Dataset, Split
from rdistill.data.imagenet import IMAGENET_WNIDS, SUBSETS, class_name, imagenet_label
from rdistill.data.registry import DATASETS, load_dataset

__all__ = [
    "DATASETS",
    "IMAGENET_WNIDS",
    "SUBSETS",
    "Dataset",
    "Split",
    "class_name",
    "imagenet_label",
    "load_dataset",
]
