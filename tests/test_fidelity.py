"""rdistill.evaluate.fidelity: a real-trained judge's agreement with a set's labels."""

import pytest
import torch

from rdistill.evaluate.fidelity import agreement


def test_agreement_counts_each_class_on_its_own_images():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    predicted = torch.tensor([0, 0, 0, 1, 1, 0, 2])  # class 0: 3 of 4, class 1: 1 of 2, class 2: 1 of 1
    out = agreement(predicted, labels, ["a", "b", "c", "d"])
    assert out.pop("all") == pytest.approx(100.0 * 5 / 7)
    assert out == {"a": 75.0, "b": 50.0, "c": 100.0}  # "d" has no image: left out
