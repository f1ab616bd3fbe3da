import math

import pytest
import torch

from rdistill.generate.minimax import FifoMemory, MinimaxMemory, cosine_matrix, diversity, representativeness


def test_cosine_matrix_hand_values():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 2.0], [3.0, 0.0]])
    expected = torch.tensor([[0.0, 1.0], [1 / math.sqrt(2), 1 / math.sqrt(2)]])
    assert torch.allclose(cosine_matrix(a, b), expected)


def test_minimax_takes_global_min_and_max_over_the_similarity_matrix():
    x0 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    memory = torch.tensor([[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])
    # similarities: row 0: 1, 0.707, -1; row 1: 0, 0.707, 0 -> min -1, max 1
    assert representativeness(x0, memory).item() == pytest.approx(2.0)
    assert diversity(x0, memory).item() == pytest.approx(1.0)


def test_mean_variants_use_the_cosine_to_the_mean():
    x0 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    real = torch.tensor([[1.0, 0.0], [1.0, 2.0]])  # mean (1, 1): cos 0.707 with both rows
    assert representativeness(x0, real, "mean").item() == pytest.approx(1 - 1 / math.sqrt(2), abs=1e-6)
    assert diversity(x0, real, "mean").item() == pytest.approx(1 / math.sqrt(2), abs=1e-6)


def test_fifo_memory_keeps_the_newest_entries():
    m = FifoMemory(size=3, dim=2)
    m.push(torch.arange(4.0).reshape(2, 2))
    m.push(torch.arange(4.0, 10.0).reshape(3, 2))
    assert m.items.tolist() == [[4, 5], [6, 7], [8, 9]]
    with pytest.raises(ValueError, match="memory size"):
        FifoMemory(size=0, dim=2)


def test_criteria_skip_classes_without_memory_and_never_compare_a_batch_with_itself():
    memory = MinimaxMemory(size=4, dim=2)
    x0 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    z0 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    first = memory.criteria(x0, z0, labels)
    assert first.pos.item() == 0 and first.neg.item() == 0  # empty memories: nothing to compare with
    memory.update(x0, z0, labels)
    assert len(memory.real[0]) == 1 and len(memory.pred[1]) == 1
    assert not memory.pred[0].items.requires_grad


def test_criteria_are_summed_over_classes_and_divided_by_their_number():
    memory = MinimaxMemory(size=4, dim=2)
    memory.update(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([0, 1]))
    # class 0: real memory (0, 1), pred memory (1, 0); class 1: real (1, 0), pred (0, 1)
    x0 = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 1])
    terms = memory.criteria(x0, x0.detach(), labels)
    pos_0, pos_1 = 1 - 0.0, 1 - 1 / math.sqrt(2)
    neg_0, neg_1 = 1.0, 1 / math.sqrt(2)
    assert terms.pos.item() == pytest.approx((pos_0 + pos_1) / 2, abs=1e-6)
    assert terms.neg.item() == pytest.approx((neg_0 + neg_1) / 2, abs=1e-6)
    (terms.pos + terms.neg).backward()
    assert x0.grad is not None and x0.grad.abs().sum() > 0


def test_off_modes_and_bad_modes():
    memory = MinimaxMemory(size=4, dim=2, rep="off", div="minimax")
    memory.update(torch.ones(1, 2), torch.ones(1, 2), torch.tensor([0]))
    terms = memory.criteria(torch.ones(1, 2), torch.ones(1, 2), torch.tensor([0]))
    assert terms.pos.item() == 0 and terms.neg.item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="bogus"):
        MinimaxMemory(size=4, dim=2, rep="bogus")


def test_memory_state_round_trip():
    memory = MinimaxMemory(size=2, dim=3)
    memory.update(torch.randn(3, 3), torch.randn(3, 3), torch.tensor([0, 2, 2]))
    restored = MinimaxMemory(size=2, dim=3)
    restored.load_state_dict(memory.state_dict())
    for c in (0, 2):
        assert torch.equal(restored.real[c].items, memory.real[c].items)
        assert torch.equal(restored.pred[c].items, memory.pred[c].items)
