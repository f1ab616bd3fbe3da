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


# Ring buffers and a step without host syncs (issue 12):


def test_ring_buffer_writes_in_place_and_keeps_fifo_order():
    m = FifoMemory(size=3, dim=2)
    m.push(torch.arange(4.0).reshape(2, 2))
    buffer = m.buffer.data_ptr()
    m.push(torch.arange(4.0, 10.0).reshape(3, 2))  # wraps around the end
    m.push(torch.arange(10.0, 12.0).reshape(1, 2))
    assert m.items.tolist() == [[6, 7], [8, 9], [10, 11]] and len(m) == 3
    assert m.buffer.data_ptr() == buffer  # no copy of the queue per push
    m.push(torch.arange(12.0, 20.0).reshape(4, 2))  # more rows than the memory: the newest 3
    assert m.items.tolist() == [[14, 15], [16, 17], [18, 19]]


def dense_criteria(memory_rows, x0, labels):
    """The criteria as Eqs. 3-4 read, on raw rows (the implementation before ring buffers)."""
    classes = labels.unique().tolist()
    pos = sum(representativeness(x0[labels == c], memory_rows["real"][c]) for c in classes)
    neg = sum(diversity(x0[labels == c], memory_rows["pred"][c]) for c in classes)
    return pos / len(classes), neg / len(classes)


def test_criteria_on_normalised_ring_buffers_equal_the_dense_formula_and_its_gradient():
    g = torch.Generator().manual_seed(0)
    memory, raw = MinimaxMemory(size=5, dim=6), {"real": {}, "pred": {}}
    for _ in range(3):  # 9 rows per class through a 5-row memory: wrapped
        z, x, y = torch.randn(6, 6, generator=g), torch.randn(6, 6, generator=g), torch.tensor([0, 1, 2] * 2)
        memory.update(x, z, y)
        for c in range(3):
            raw["real"][c] = torch.cat([raw["real"].get(c, torch.empty(0, 6)), z[y == c]])[-5:]
            raw["pred"][c] = torch.cat([raw["pred"].get(c, torch.empty(0, 6)), x[y == c]])[-5:]
    assert torch.allclose(memory.pred[1].rows.norm(dim=1), torch.ones(5))  # stored normalised
    x0 = torch.randn(7, 6, generator=g, requires_grad=True)
    labels = torch.tensor([2, 0, 2, 1, 0, 2, 2])
    got = memory.criteria(x0, x0.detach(), labels)
    want = dense_criteria(raw, x0, labels)
    assert torch.allclose(got.pos, want[0], atol=1e-6) and torch.allclose(got.neg, want[1], atol=1e-6)
    grad_got = torch.autograd.grad(got.pos + 2 * got.neg, x0)[0]
    grad_want = torch.autograd.grad(want[0] + 2 * want[1], x0)[0]
    assert torch.allclose(grad_got, grad_want, atol=1e-6)


def test_a_step_never_reads_device_values_on_the_host():
    """On the meta device a tensor has no values: any .item(), .tolist(), .unique() or `if tensor` would raise."""
    memory = MinimaxMemory(size=4, dim=6)
    labels = torch.tensor([0, 1, 0])  # the loader's host labels
    memory.update(torch.randn(3, 6, device="meta"), torch.randn(3, 6, device="meta"), labels)
    for _ in range(3):
        x0 = torch.randn(3, 6, device="meta", requires_grad=True)
        terms = memory.criteria(x0, x0.detach(), labels)
        (terms.pos + terms.neg).backward()
        memory.update(x0, x0.detach(), labels)
    assert memory.real[0].buffer.device.type == "meta" and len(memory.pred[0]) == 4
    with pytest.raises(ValueError, match="CPU tensor"):
        memory.criteria(x0, x0.detach(), labels.to("meta"))


def test_memory_overwritten_after_the_loss_does_not_break_its_backward():
    memory = MinimaxMemory(size=2, dim=3)
    memory.update(torch.randn(2, 3), torch.randn(2, 3), torch.tensor([0, 0]))
    x0 = torch.randn(2, 3, requires_grad=True)
    terms = memory.criteria(x0, x0.detach(), torch.tensor([0, 0]))
    memory.update(x0, x0.detach(), torch.tensor([0, 0]))  # in place, before backward (the train step's order)
    (terms.pos + terms.neg).backward()
    assert x0.grad.abs().sum() > 0


def test_a_checkpoint_from_before_ring_buffers_is_normalised_on_load():
    old = {"real.0": torch.tensor([[3.0, 4.0]]), "pred.0": torch.tensor([[0.0, 2.0]])}  # raw rows, no "format"
    memory = MinimaxMemory(size=2, dim=2)
    memory.load_state_dict(old)
    assert memory.real[0].items.flatten().tolist() == pytest.approx([0.6, 0.8])
    assert memory.pred[0].items.flatten().tolist() == [0.0, 1.0]
    again = MinimaxMemory(size=2, dim=2)
    again.load_state_dict(memory.state_dict())  # the new format: rows as held, bit for bit
    assert torch.equal(again.real[0].items, memory.real[0].items)


@pytest.mark.parametrize("rep, div", [("minimax", "minimax"), ("mean", "mean")])
def test_centred_criteria_are_the_papers_on_vectors_minus_the_centre(rep, div):
    g = torch.Generator().manual_seed(1)
    centre = torch.randn(6, generator=g)
    centred, shifted = MinimaxMemory(4, 6, rep, div, centre=centre), MinimaxMemory(4, 6, rep, div)
    for _ in range(2):
        z, x, y = torch.randn(6, 6, generator=g), torch.randn(6, 6, generator=g), torch.tensor([0, 1, 2] * 2)
        centred.update(x, z, y)
        shifted.update(x - centre, z - centre, y)
    x0, z0, labels = torch.randn(5, 6, generator=g), torch.randn(5, 6, generator=g), torch.tensor([2, 0, 2, 1, 0])
    got, want = centred.criteria(x0, z0, labels), shifted.criteria(x0 - centre, z0 - centre, labels)
    assert torch.allclose(got.pos, want.pos, atol=1e-6) and torch.allclose(got.neg, want.neg, atol=1e-6)


def test_centring_removes_what_every_image_shares():
    """Two different garments on one large shared background: nearly the same direction raw, unrelated centred."""
    background = torch.tensor([10.0, 10.0, 0.0, 0.0])
    a, b = background + torch.tensor([0.0, 0.0, 1.0, 0.0]), background + torch.tensor([0.0, 0.0, 0.0, 1.0])
    raw, centred = MinimaxMemory(4, 4), MinimaxMemory(4, 4, centre=background)
    for m in (raw, centred):
        m.update(a[None], a[None], torch.tensor([0]))
    assert raw.criteria(b[None], b[None], torch.tensor([0])).neg.item() > 0.99
    assert centred.criteria(b[None], b[None], torch.tensor([0])).neg.item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match=r"centre has shape \(3,\); expected \(4,\)"):
        MinimaxMemory(4, 4, centre=torch.zeros(3))
