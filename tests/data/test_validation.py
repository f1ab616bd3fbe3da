from pathlib import Path

import pytest
import torch

from rdistill.data import load_dataset
from rdistill.data.base import Split
from rdistill.data.validation import stratified_carve, validation_split


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_the_carve_splits_each_class_of_the_train_split_and_never_uses_the_test_split(digits):
    val = validation_split(digits, fraction=0.2, seed=0)
    assert len(val.train) + len(val.test) == len(digits.train)
    for c in range(digits.num_classes):
        n = int((digits.train.labels == c).sum())
        assert int((val.test.labels == c).sum()) == round(0.2 * n)  # stratified: each class keeps its share
    kept, carved = stratified_carve(digits.train.labels, 0.2, seed=0)
    assert torch.equal(val.test.pixels, digits.train.pixels[carved])  # images of the TRAIN split only
    assert torch.equal(val.train.pixels, digits.train.pixels[kept])
    assert torch.equal(val.test.labels, digits.train.labels[carved])
    assert val.classes == digits.classes and val.model_labels == digits.model_labels


def test_the_carve_is_seeded_and_disjoint(digits):
    labels = digits.train.labels
    kept, carved = stratified_carve(labels, 0.2, seed=0)
    assert set(kept.tolist()).isdisjoint(carved.tolist())
    assert sorted(kept.tolist() + carved.tolist()) == list(range(len(labels)))
    assert torch.equal(carved, stratified_carve(labels, 0.2, seed=0)[1])
    assert not torch.equal(carved, stratified_carve(labels, 0.2, seed=1)[1])


def test_file_splits_are_carved_by_path(tmp_path):
    paths = tuple(Path(tmp_path) / f"{i}.png" for i in range(6))
    split = Split(labels=torch.tensor([0, 0, 0, 1, 1, 1]), image_size=8, channels=1, paths=paths)
    kept, carved = stratified_carve(split.labels, 0.34, seed=0)
    from rdistill.data.validation import subset

    part = subset(split, carved)
    assert part.paths == tuple(paths[i] for i in carved.tolist()) and part.labels.tolist() == [0, 1]


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_a_fraction_outside_0_1_is_refused(digits, fraction):
    with pytest.raises(ValueError, match="fraction"):
        validation_split(digits, fraction)


def test_a_class_with_one_image_cannot_be_carved():
    with pytest.raises(ValueError, match="class 1 has 1"):
        stratified_carve(torch.tensor([0, 0, 1]), 0.5, seed=0)
