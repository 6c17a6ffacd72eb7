"""ResNet backbones (torchvision resnet18/34/50): taps after layer2, layer3, layer4 (strides 8, 16, 32).

Stages: 0 stem (conv1, bn1, relu, maxpool), 1..4 layer1..layer4. On a 300x300 input the taps are
38x38, 19x19 and 10x10, the first three levels of SSD300's anchors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import cast

import torchvision
from torch import Tensor, nn
from torchvision.models import ResNet

from cvkit.models.backbones._load import load_torchvision_state
from cvkit.models.backbones.base import Backbone

__all__ = ["resnet18", "resnet34", "resnet50"]


def _resnet(factory: Callable[..., ResNet], name: str, state_dict: Mapping[str, Tensor] | None) -> Backbone:
    net = factory(weights=None)
    if state_dict is not None:
        load_torchvision_state(net, state_dict, ("fc.",), name)
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    widths = [net.layer2[-1], net.layer3[-1], net.layer4[-1]]
    # the last block's final BatchNorm has the block's output channels (basic: bn2, bottleneck: bn3)
    channels = [cast(nn.BatchNorm2d, b.bn3 if hasattr(b, "bn3") else b.bn2).num_features for b in widths]
    return Backbone(
        [stem, net.layer1, net.layer2, net.layer3, net.layer4],
        taps=(2, 3, 4),
        out_channels=channels,
        strides=(8, 16, 32),
        num_pretrained_stages=5,
    )


def resnet18(state_dict: Mapping[str, Tensor] | None = None) -> Backbone:
    """ResNet-18 backbone; ``state_dict``: torchvision ``resnet18`` weights (``fc.*`` optional)."""
    return _resnet(torchvision.models.resnet18, "resnet18", state_dict)


def resnet34(state_dict: Mapping[str, Tensor] | None = None) -> Backbone:
    """ResNet-34 backbone; ``state_dict``: torchvision ``resnet34`` weights (``fc.*`` optional)."""
    return _resnet(torchvision.models.resnet34, "resnet34", state_dict)


def resnet50(state_dict: Mapping[str, Tensor] | None = None) -> Backbone:
    """ResNet-50 backbone; ``state_dict``: torchvision ``resnet50`` weights (``fc.*`` optional)."""
    return _resnet(torchvision.models.resnet50, "resnet50", state_dict)
