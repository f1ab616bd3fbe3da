import pytest
import torch
from torch import nn

from rdistill.models.students import STUDENTS, build_student, convnet_depth, feature_extractor


def _forward_backward(model: nn.Module, x: torch.Tensor, num_classes: int) -> None:
    out = model(x)
    assert out.shape == (len(x), num_classes)
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", ["convnet-3", "resnetap-10", "resnet-18", "resnet18", "convnet"])
def test_students_forward_backward_at_28(name, channels):
    torch.manual_seed(0)
    model = build_student(name, num_classes=10, channels=channels, image_size=28)
    _forward_backward(model, torch.randn(2, channels, 28, 28), 10)


@pytest.mark.parametrize("name", ["convnet-6", "resnetap-10", "resnet18"])
def test_students_forward_backward_at_224(name):
    torch.manual_seed(0)
    model = build_student(name, num_classes=10, channels=3, image_size=224)
    _forward_backward(model, torch.randn(2, 3, 224, 224), 10)


@pytest.mark.parametrize(("size", "depth"), [(8, 3), (28, 3), (32, 3), (64, 4), (128, 5), (224, 6), (256, 6)])
def test_plain_convnet_depth_follows_resolution(size, depth):
    model = build_student("convnet", num_classes=2, channels=3, image_size=size)
    assert convnet_depth(size) == depth
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == depth


def test_convnet_layers_are_conv_instancenorm_relu_avgpool_width_128():
    model = build_student("convnet-3", num_classes=10, channels=3, image_size=32)
    kinds = [type(m) for m in model.body]
    assert kinds == [nn.Conv2d, nn.GroupNorm, nn.ReLU, nn.AvgPool2d] * 3
    norms = [m for m in model.body if isinstance(m, nn.GroupNorm)]
    assert all(m.num_groups == m.num_channels == 128 and m.affine for m in norms)  # instance norm
    assert model.classifier.in_features == 128 * 4 * 4  # 32 -> 16 -> 8 -> 4


def test_convnet_pads_one_channel_28px_to_32_like_dc():
    model = build_student("convnet-3", num_classes=10, channels=1, image_size=28)
    assert model.classifier.in_features == 128 * 4 * 4


def test_resnetap_downsamples_only_by_average_pooling():
    for size in (28, 224):
        model = build_student("resnetap-10", num_classes=10, channels=3, image_size=size)
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        assert all(c.stride == (1, 1) for c in convs)
        assert not any(isinstance(m, (nn.MaxPool2d, nn.BatchNorm2d)) for m in model.modules())
        assert sum(isinstance(m, nn.AvgPool2d) for m in model.modules()) >= 6  # 3 stages x (main, shortcut)
        assert len(model.layers) == 4  # BasicBlock x [1, 1, 1, 1]


def test_resnetap_stem_by_resolution():
    small = build_student("resnetap-10", 10, 3, 32)
    large = build_student("resnetap-10", 10, 3, 224)
    assert small.stem[0].kernel_size == (3, 3) and isinstance(small.stem[3], nn.Identity)
    assert large.stem[0].kernel_size == (7, 7) and large.stem[3].kernel_size == 4


def test_convnet_too_deep_for_the_image_is_an_error():
    with pytest.raises(ValueError, match="smaller depth"):
        build_student("convnet-6", num_classes=10, channels=3, image_size=28)


def test_unknown_student_names_ours_and_timm():
    with pytest.raises(ValueError, match="timm.list_models") as err:
        build_student("no-such-net", num_classes=10, channels=3, image_size=32)
    assert all(name in str(err.value) for name in STUDENTS)


def test_other_timm_names_are_built_by_timm():
    model = build_student("resnet10t", num_classes=5, channels=1, image_size=32)
    assert model.default_cfg["architecture"] == "resnet10t"
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 5)


@pytest.mark.parametrize(("name", "head"), [("convnet-3", "classifier"), ("resnetap-10", "fc"), ("resnet-18", "fc")])
def test_feature_extractor_is_the_classifier_input(name, head):
    torch.manual_seed(0)
    model = build_student(name, num_classes=4, channels=3, image_size=32).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        feats = feature_extractor(model)(x)
        assert feats.ndim == 2 and len(feats) == 3
        torch.testing.assert_close(getattr(model, head)(feats), model(x))


def test_feature_extractor_refuses_unknown_modules():
    with pytest.raises(ValueError, match="penultimate"):
        feature_extractor(nn.Linear(2, 2))
