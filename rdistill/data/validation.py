"""A validation split carved from a dataset's TRAIN split, so that a sweep never looks at the test split.

    val = validation_split(load_dataset("digits"), fraction=0.2, seed=0)
    # val.train: ~80% of each class of the train split; val.test: the other ~20%; the real test split unused

The carve is stratified (each class keeps its share) and seeded (the same seed gives the same images).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from rdistill.common.seeds import STREAM_CARVE, derive
from rdistill.data.base import Dataset, Split


def validation_split(dataset: Dataset, fraction: float = 0.2, seed: int = 0) -> Dataset:
    """`dataset` whose train/test are a seeded, stratified carve of its train split (test = validation)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
    train_idx, val_idx = stratified_carve(dataset.train.labels, fraction, seed)
    return replace(dataset, name=f"{dataset.name}[validation {fraction:g} seed {seed}]",
                   train=subset(dataset.train, train_idx), test=subset(dataset.train, val_idx))


def stratified_carve(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, carved) sorted indices: round(fraction * n_c) images of each class c carved, at least one,
    and at least one kept; the images of a class are chosen by a permutation seeded with (seed, c)."""
    kept, carved = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()  # (n_c,)
        if len(idx) < 2:
            raise ValueError(f"class {c} has {len(idx)} training image(s); a validation carve needs at least 2")
        k = min(max(1, round(fraction * len(idx))), len(idx) - 1)
        perm = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(derive(seed, STREAM_CARVE, c)))]
        carved.append(perm[:k])
        kept.append(perm[k:])
    return torch.cat(kept).sort().values, torch.cat(carved).sort().values


def subset(split: Split, idx: torch.Tensor) -> Split:
    """The images `idx` of a split, in that order (pixels or paths, whichever the split holds)."""
    if split.pixels is not None:
        return replace(split, labels=split.labels[idx], pixels=split.pixels[idx])
    return replace(split, labels=split.labels[idx], paths=tuple(split.paths[i] for i in idx.tolist()))
