"""The student networks a surrogate set is measured with (SPEC.md section 5), chosen by name.

- `convnet-<d>`: d blocks of conv3x3 -> instance norm -> ReLU -> avg-pool 2, width 128, then one linear
  layer on the flattened map (the ConvNet of the dataset-condensation papers, DC/IDC).
  `convnet` alone picks d from the resolution: 3 up to 32 px, 4 up to 64, 5 up to 128, 6 up to 256
  (IDC/RDED use ConvNet-3 at 32, -4 at 64, -5 at 128, -6 at 224/256).
- `resnetap-10`: ResNet-10 (BasicBlock [1, 1, 1, 1], width 64) whose down-sampling is a stride-1 conv
  followed by AvgPool2d(2), in the main path and in the shortcut; instance norm throughout.
- `resnet-18` / `resnet18`: timm's ResNet-18 (batch norm, random init).
- any other name: handed to timm.create_model.

Instance norm is GroupNorm(C, C, affine=True), as in the dataset-distillation code.
"""

from __future__ import annotations

from typing import Callable

import timm
import torch
import torch.nn.functional as F
from torch import nn

STUDENTS = ("convnet", "convnet-3", "convnet-6", "resnetap-10", "resnet-18")  # convnet-<d>: any d >= 1
CONVNET_WIDTH = 128  # DC / IDC ConvNet


def build_student(name: str, num_classes: int, channels: int, image_size: int) -> nn.Module:
    """A freshly initialised student network; input (N, channels, image_size, image_size), output (N, classes)."""
    key = name.lower()
    if key == "convnet":
        return ConvNet(convnet_depth(image_size), num_classes, channels, image_size)
    if key.startswith("convnet-") and key[len("convnet-") :].isdigit():
        return ConvNet(int(key[len("convnet-") :]), num_classes, channels, image_size)
    if key == "resnetap-10":
        return ResNetAP10(num_classes, channels, image_size)
    if key in ("resnet-18", "resnet18"):
        return timm.create_model("resnet18", pretrained=False, num_classes=num_classes, in_chans=channels)
    if timm.is_model(name):
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=channels)
    raise ValueError(
        f"unknown student {name!r}: use one of {', '.join(STUDENTS)} (convnet-<depth> for any depth), "
        "or a timm model name (see timm.list_models())"
    )


def convnet_depth(image_size: int) -> int:
    """The ConvNet depth the literature uses at this resolution (3 at 32 px ... 6 at 224/256 px)."""
    for max_size, depth in ((32, 3), (64, 4), (128, 5), (256, 6)):
        if image_size <= max_size:
            return depth
    raise ValueError(f"no default ConvNet depth for image_size={image_size} (> 256): name one, e.g. 'convnet-7'")


def feature_extractor(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function images (N, C, H, W) -> penultimate features (N, D), the input of the classifier."""
    if isinstance(model, (ConvNet, ResNetAP10)):
        return model.features
    if hasattr(model, "forward_features") and hasattr(model, "forward_head"):  # every timm model
        return lambda x: model.forward_head(model.forward_features(x), pre_logits=True)
    raise ValueError(f"cannot find the penultimate features of {type(model).__name__}: not a student of build_student")


def instance_norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(c, c, affine=True)


class ConvNet(nn.Module):
    """depth x [conv3x3 -> instance norm -> ReLU -> avg-pool 2] -> linear."""

    def __init__(self, depth: int, num_classes: int, channels: int, image_size: int, width: int = CONVNET_WIDTH):
        super().__init__()
        if depth < 1:
            raise ValueError(f"ConvNet depth must be >= 1, got {depth}")
        # DC/IDC pad a 1-channel input by 3 in the first layer (28x28 MNIST becomes a 32x32 map).
        first_pad = 3 if channels == 1 else 1
        layers, c, s = [], channels, image_size
        for d in range(depth):
            pad = first_pad if d == 0 else 1
            layers += [nn.Conv2d(c, width, 3, padding=pad), instance_norm(width), nn.ReLU(), nn.AvgPool2d(2)]
            c, s = width, (s + 2 * pad - 2) // 2
            if s < 1:
                raise ValueError(f"convnet-{depth} pools a {image_size}px image to nothing: use a smaller depth")
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * s * s, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).flatten(1)  # (N, width * s * s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlockAP(nn.Module):
    """ResNet basic block whose stride-2 down-sampling is an AvgPool2d(2) after a stride-1 conv."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.norm1 = instance_norm(c_out)
        self.pool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = instance_norm(c_out)
        self.shortcut = nn.Identity()
        if stride > 1 or c_in != c_out:  # reference order: conv1x1 -> avg-pool -> norm
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, bias=False),
                nn.AvgPool2d(stride) if stride > 1 else nn.Identity(),
                instance_norm(c_out),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(F.relu(self.norm1(self.conv1(x))))
        h = self.norm2(self.conv2(h))
        return F.relu(h + self.shortcut(x))


class ResNetAP10(nn.Module):
    """ResNet-10 with average-pool down-sampling and instance norm (IDC's ResNetAP, depth 10).

    Stem by resolution, as in the reference (train_models/resnet_ap.py): up to 64 px a 3x3 conv without
    pooling; up to 128 px a 3x3 conv + AvgPool2d(2); larger a 7x7 stride-1 conv + AvgPool2d(4)
    (not torchvision's stride-2 conv + max-pool: no strided down-sampling anywhere).
    """

    def __init__(self, num_classes: int, channels: int, image_size: int, width: int = 64):
        super().__init__()
        kernel, pool = (3, 1) if image_size <= 64 else (3, 2) if image_size <= 128 else (7, 4)
        self.stem = nn.Sequential(
            nn.Conv2d(channels, width, kernel, padding=kernel // 2, bias=False),
            instance_norm(width),
            nn.ReLU(),
            nn.AvgPool2d(pool) if pool > 1 else nn.Identity(),
        )
        widths = (width, 2 * width, 4 * width, 8 * width)  # stages 1-4; stages 2-4 halve the map
        c_ins = (width,) + widths[:-1]
        self.layers = nn.Sequential(*[BasicBlockAP(c_ins[i], widths[i], 1 if i == 0 else 2) for i in range(4)])
        self.fc = nn.Linear(widths[-1], num_classes)
        for m in self.modules():  # reference init: He normal (fan-out) convs, norms at identity
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layers(self.stem(x))  # (N, 512, s, s)
        return h.mean(dim=(2, 3))  # (N, 512) global average pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))
