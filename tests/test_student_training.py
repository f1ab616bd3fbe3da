from dataclasses import replace

import pytest
import torch
from torch import nn

from rdistill.evaluate.protocols import SoftLabels, get_protocol
from rdistill.evaluate.training import (
    augment,
    crop_and_flip,
    cutmix,
    distillation_loss,
    lighting,
    random_resized_crop_boxes,
    train_and_test,
)


def two_patterns(n: int, seed: int, channels: int = 1, size: int = 8):
    """Class 0 is bright on the left half, class 1 on the right half, plus noise; in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    pattern = torch.zeros(2, 1, size, size)
    pattern[0, :, :, : size // 2] = 1
    pattern[1, :, :, size // 2 :] = 1
    x = -0.4 + 0.8 * pattern[y] + 0.3 * torch.randn(n, channels, size, size, generator=g)
    return x.clamp(-1, 1), y


def augmenting(**changes):
    """The IDC protocol (every augmentation, CutMix) at the data's own resolution, in small batches."""
    return replace(get_protocol("idc"), image_size=None, batch_size=8, **changes)


def test_small_protocol_learns_a_separable_set_in_a_few_epochs():
    (xtr, ytr), (xte, yte) = two_patterns(32, seed=0), two_patterns(200, seed=1)
    r = train_and_test("convnet-3", get_protocol("small"), xtr, ytr, xte, yte, num_classes=2, seed=0, epochs=5)
    assert r["final_acc"] > 90 and r["best_acc"] >= r["final_acc"]
    assert r["epochs"] == 5 and r["seconds"] > 0


def test_same_seed_same_run_with_every_augmentation():
    (xtr, ytr), (xte, yte) = two_patterns(32, 0, channels=3), two_patterns(200, 1, channels=3)
    runs = [
        train_and_test("convnet-3", augmenting(), xtr, ytr, xte, yte, num_classes=2, seed=s, epochs=4, eval_every=1)
        for s in (3, 3)
    ]
    assert runs[0]["history"] == runs[1]["history"]


def test_augment_is_a_function_of_the_generator():
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    a, b, c = (augment(x, augmenting(), torch.Generator().manual_seed(s)) for s in (0, 0, 1))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert a.shape == x.shape


def test_history_tests_every_eval_every_epochs_and_the_last():
    (xtr, ytr), (xte, yte) = two_patterns(16, 0), two_patterns(20, 1)
    r = train_and_test("convnet-3", get_protocol("small"), xtr, ytr, xte, yte, num_classes=2, seed=0, epochs=20)
    assert [e for e, _ in r["history"]] == list(range(2, 21, 2))  # ~10 tests by default
    r = train_and_test(
        "convnet-3", get_protocol("small"), xtr, ytr, xte, yte, num_classes=2, seed=0, epochs=20, eval_every=7
    )
    assert [e for e, _ in r["history"]] == [7, 14, 20]
    assert r["final_acc"] == r["history"][-1][1] and r["best_acc"] == max(a for _, a in r["history"])


def test_epochs_default_to_the_protocols_ipc_rule():
    rule = replace(get_protocol("small"), epochs=None, epochs_by_ipc=((1, 2), (None, 3)))
    (xte, yte) = two_patterns(4, 1)
    for n, epochs in ((2, 2), (3, 3)):  # 1 image per class; then 2 of class 0 (the largest class counts)
        xtr, ytr = two_patterns(n, 0)
        r = train_and_test("convnet-3", rule, xtr, ytr, xte, yte, num_classes=2, seed=0)
        assert r["epochs"] == epochs


def test_cutmix_labels_sum_to_one_and_match_the_pasted_area():
    n, k = 6, 6
    x = torch.arange(n, dtype=torch.float).view(n, 1, 1, 1).expand(n, 3, 10, 10)  # image i is filled with i
    targets = torch.eye(k)[torch.arange(n)]
    for seed in range(20):
        mixed, t = cutmix(x, targets, beta=1.0, g=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(t.sum(1), torch.ones(n))
        share = torch.stack([(mixed[i, 0] == i).float().mean() for i in range(n)])  # still image i
        torch.testing.assert_close(share, t.diagonal())


def test_cutmix_leaves_its_input_alone():
    x = torch.randn(4, 3, 8, 8)
    before = x.clone()
    cutmix(x, torch.eye(4), 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(x, before)


def test_random_resized_crop_boxes_lie_inside_with_the_asked_area():
    boxes = random_resized_crop_boxes(500, 224, 224, (0.5, 1.0), torch.Generator().manual_seed(0))
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 224).all() and (left + w <= 224).all()
    area = h * w / 224**2
    assert area.min() > 0.49 and area.max() <= 1.0
    assert (w / h).min() > 0.74 and (w / h).max() < 1.35


def test_flip_without_crop_is_an_exact_mirror():
    x = torch.randn(16, 3, 8, 8)
    out = crop_and_flip(x, None, True, torch.Generator().manual_seed(0))
    same = (out - x).abs().amax(dim=(1, 2, 3)) < 1e-5
    mirrored = (out - x.flip(-1)).abs().amax(dim=(1, 2, 3)) < 1e-5
    assert (same | mirrored).all() and same.any() and mirrored.any()


def test_lighting_shifts_each_channel_by_a_constant():
    x = torch.rand(5, 3, 6, 6)
    shift = lighting(x, 0.1, torch.Generator().manual_seed(0)) - x
    torch.testing.assert_close(shift, shift[:, :, :1, :1].expand_as(shift))
    assert shift.abs().max() > 0


def test_colour_augmentations_skip_one_channel_images():
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    out = augment(x, augmenting(rrc_scale=None, flip=False), torch.Generator().manual_seed(0))
    assert torch.equal(out, x)


def test_distillation_loss_is_zero_when_student_equals_teacher_and_scales_by_t2():
    torch.manual_seed(0)
    teacher = nn.Linear(4, 3)
    x = torch.randn(5, 4)
    logits = teacher(x).detach()
    assert distillation_loss(logits, teacher, x, SoftLabels(temperature=20.0)).abs() < 1e-6
    other = torch.randn(5, 3)
    plain = distillation_loss(other, teacher, x, SoftLabels(temperature=4.0))
    scaled = distillation_loss(other, teacher, x, SoftLabels(temperature=4.0, t_squared=True))
    torch.testing.assert_close(scaled, plain * 16)


def test_soft_label_protocol_trains_with_a_teacher_and_refuses_without():
    (xtr, ytr), (xte, yte) = two_patterns(8, 0, channels=3), two_patterns(8, 1, channels=3)
    rded = replace(get_protocol("rded"), image_size=None, batch_size=4)
    with pytest.raises(ValueError, match="teacher"):
        train_and_test("convnet-3", rded, xtr, ytr, xte, yte, num_classes=2, seed=0, epochs=1)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    r = train_and_test("convnet-3", rded, xtr, ytr, xte, yte, num_classes=2, seed=0, epochs=2, teacher=teacher)
    assert len(r["history"]) == 2 and 0 <= r["final_acc"] <= 100


def test_images_at_the_wrong_size_for_the_protocol_are_an_error():
    (xtr, ytr), (xte, yte) = two_patterns(4, 0, channels=3), two_patterns(4, 1, channels=3)
    with pytest.raises(ValueError, match="224px"):
        train_and_test("convnet-3", get_protocol("idc"), xtr, ytr, xte, yte, num_classes=2, seed=0, epochs=1)
    with pytest.raises(ValueError, match="labels"):
        train_and_test("convnet-3", get_protocol("small"), xtr, ytr + 5, xte, yte, num_classes=2, seed=0, epochs=1)
