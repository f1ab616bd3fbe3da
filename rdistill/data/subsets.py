"""A class subset of a dataset: `fashion-mnist[0,2,4,6]` (indices or class names), or a named one.

    load_dataset("fashion-tops")            # T-shirt/top, Pullover, Coat, Shirt of Fashion-MNIST
    load_dataset("fashion-mnist[Coat,Shirt]")

The subset keeps its classes' model labels (the parent's), so a base trained on all classes is fine-tuned
on a few of them and labels them as it learned them: the paper's setting of a generator pretrained on
ImageNet-1K fine-tuned on ImageWoof's dog breeds, at small scale. Both splits keep only those classes,
relabelled 0..k-1 in the order given.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from rdistill.data.base import Dataset, Split
from rdistill.data.validation import subset

# Named subsets: the confusable upper-body garments of Fashion-MNIST, a small "ImageWoof" (issue 11).
NAMED = {"fashion-tops": "fashion-mnist[T-shirt/top,Pullover,Coat,Shirt]"}


def parse(name: str) -> tuple[str, list[str] | None]:
    """"base[a,b]" -> ("base", ["a", "b"]); a name without brackets -> (name, None)."""
    name = NAMED.get(name, name)
    if not name.endswith("]") or "[" not in name:
        return name, None
    base, _, inside = name[:-1].partition("[")
    classes = [c.strip() for c in inside.split(",")]
    if not base or not all(classes):
        raise ValueError(f"dataset {name!r}: write a class subset as NAME[class,class,...] with at least one class")
    return base, classes


def class_subset(dataset: Dataset, requested: list[str], name: str) -> Dataset:
    """The classes `requested` (names, or indices of the parent) of `dataset`, in that order."""
    idx = []
    for c in requested:
        k = dataset.classes.index(c) if c in dataset.classes else int(c) if c.isdigit() else -1
        if not 0 <= k < dataset.num_classes:
            raise ValueError(f"dataset {name!r}: no class {c!r} in {dataset.name}; its classes are "
                             f"{list(dataset.classes)} (or their indices 0..{dataset.num_classes - 1})")
        if k in idx:
            raise ValueError(f"dataset {name!r}: class {c!r} is named twice")
        idx.append(k)
    return replace(dataset, name=name, classes=tuple(dataset.classes[k] for k in idx),
                   model_labels=tuple(dataset.model_labels[k] for k in idx),
                   train=_keep(dataset.train, idx), test=_keep(dataset.test, idx))


def _keep(split: Split, idx: list[int]) -> Split:
    """The images of classes idx, relabelled 0..len(idx)-1."""
    new = torch.full((int(split.labels.max()) + 1,), -1, dtype=torch.long)
    new[torch.tensor(idx)] = torch.arange(len(idx))
    rows = torch.nonzero(new[split.labels] >= 0).flatten()  # (n,) in the split's order
    kept = subset(split, rows)
    return replace(kept, labels=new[kept.labels])
