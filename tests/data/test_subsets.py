import pytest
import torch

from rdistill.data import load_dataset
from rdistill.data.subsets import parse


def test_a_subset_keeps_its_classes_and_their_model_labels():
    full, sub = load_dataset("digits"), load_dataset("digits[7,3]")
    assert sub.classes == ("7", "3") and sub.model_labels == (7, 3) and sub.name == "digits[7,3]"
    for split, whole in ((sub.train, full.train), (sub.test, full.test)):
        assert set(split.labels.tolist()) == {0, 1}
        assert len(split) == int(((whole.labels == 7) | (whole.labels == 3)).sum())
        sevens = whole.images(torch.nonzero(whole.labels == 7).flatten())
        assert torch.equal(split.images(torch.nonzero(split.labels == 0).flatten()), sevens)  # same images, in order


def test_named_subsets_and_bad_ones():
    assert parse("fashion-tops") == ("fashion-mnist", ["T-shirt/top", "Pullover", "Coat", "Shirt"])
    assert parse("digits") == ("digits", None)
    with pytest.raises(ValueError, match="named twice"):
        load_dataset("digits[3,3]")
    with pytest.raises(ValueError, match=r"no class '11' in digits"):
        load_dataset("digits[11]")
    with pytest.raises(ValueError, match="at least one class"):
        load_dataset("digits[]")
