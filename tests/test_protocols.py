import math
from dataclasses import replace

import pytest
import torch

from rdistill.evaluate.protocols import PROTOCOLS, epochs_for, get_protocol, lr_factor, milestone_epochs


def test_idc_preset_matches_spec():
    p = get_protocol("idc")
    assert (p.optimizer, p.lr, p.momentum, p.weight_decay, p.batch_size) == ("sgd", 0.01, 0.9, 5e-4, 64)
    assert (p.schedule, p.milestones, p.gamma) == ("multistep", (2 / 3, 5 / 6), 0.2)
    assert (p.rrc_scale, p.flip, p.color_jitter, p.lighting) == ((0.5, 1.0), True, 0.4, 0.1)
    assert (p.cutmix_prob, p.cutmix_beta, p.soft_labels, p.image_size) == (1.0, 1.0, None, 224)
    assert p.students == ("convnet-6", "resnetap-10", "resnet-18")
    table = {1: 3000, 2: 2000, 10: 2000, 11: 1500, 50: 1500, 51: 1000, 200: 1000, 201: 500, 500: 500, 501: 300}
    table[10**6] = 300
    assert {ipc: epochs_for(p, ipc) for ipc in table} == table


def test_rded_preset_matches_spec():
    p = get_protocol("rded")
    assert (p.optimizer, p.lr, p.weight_decay, p.schedule) == ("adamw", 1e-3, 0.01, "cosine")
    assert epochs_for(p, 10) == epochs_for(p, 50) == 300
    assert (p.soft_labels.temperature, p.rrc_scale, p.image_size, p.cutmix_prob) == (20.0, (0.08, 1.0), 224, 1.0)
    assert p.students == ("resnet-18",)


def test_small_preset_matches_spec():
    p = get_protocol("small")
    assert (p.optimizer, p.lr, p.momentum, p.weight_decay) == ("sgd", 0.01, 0.9, 5e-4)
    assert (p.schedule, p.milestones, p.gamma) == ("multistep", (0.5,), 0.1)
    assert 300 <= epochs_for(p, 1) == epochs_for(p, 50) <= 1000
    assert p.students == ("convnet-3",) and p.soft_labels is None


def test_epochs_override_is_recorded_in_the_protocol():
    p = get_protocol("idc", epochs=7)
    assert p.epochs == 7 and epochs_for(p, 1) == epochs_for(p, 1000) == 7
    assert PROTOCOLS["idc"].epochs is None  # the preset itself is untouched


def test_unknown_protocol_and_bad_values_are_errors():
    with pytest.raises(ValueError, match="unknown protocol"):
        get_protocol("dsa")
    with pytest.raises(ValueError, match="epochs"):
        get_protocol("small", epochs=0)
    with pytest.raises(ValueError, match="optimizer"):
        replace(PROTOCOLS["idc"], optimizer="adam")
    with pytest.raises(ValueError, match="catch-all"):
        replace(PROTOCOLS["idc"], epochs_by_ipc=((10, 5),))
    with pytest.raises(ValueError, match="ipc"):
        epochs_for(PROTOCOLS["idc"], 0)


@pytest.mark.parametrize("epochs", [1, 2, 3, 5, 6, 7, 12, 100, 300, 1000, 1500, 2000, 3000])
def test_idc_milestones_are_the_references_integer_division(epochs):
    assert milestone_epochs(PROTOCOLS["idc"], epochs) == [2 * epochs // 3, 5 * epochs // 6]


@pytest.mark.parametrize("name", ["idc", "small"])
def test_multistep_factor_matches_torch_multisteplr(name):
    p, epochs = PROTOCOLS[name], 30
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestone_epochs(p, epochs), gamma=p.gamma)
    for epoch in range(epochs):
        assert lr_factor(p, epoch, epochs) == pytest.approx(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()


def test_idc_and_small_decay_points():
    idc, small = PROTOCOLS["idc"], PROTOCOLS["small"]
    assert [lr_factor(idc, e, 300) for e in (0, 199, 200, 249, 250, 299)] == pytest.approx([1, 1, 0.2, 0.2, 0.04, 0.04])
    assert [lr_factor(small, e, 300) for e in (0, 149, 150, 299)] == pytest.approx([1, 1, 0.1, 0.1])


def test_rded_cosine_is_the_references_quarter_wave():
    p = PROTOCOLS["rded"]
    assert lr_factor(p, 0, 300) == 1.0
    assert lr_factor(p, 150, 300) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor(p, 299, 300) == pytest.approx(0.5, abs=0.01)  # ends near half the base lr
    full = replace(p, schedule="cosine_full")
    assert lr_factor(full, 150, 300) == pytest.approx(0.5) and lr_factor(full, 299, 300) < 1e-3


def test_protocols_are_frozen():
    with pytest.raises(AttributeError):
        PROTOCOLS["idc"].lr = 0.1  # type: ignore[misc]
