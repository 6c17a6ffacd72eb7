"""ResNet backbones (torchvision resnet18/34/50): taps after layer2, layer3, layer4 (strides 8, 16, 32).

Stages: 0 stem (conv1, bn1, relu, maxpool), 1..4 layer1..layer4. On a 300x300 input the taps are
38x38, 19x19 and 10x10, the first three levels of SSD300's anchors.

``width`` scales every stage's channels (the stem's 64 and the stages' 64/128/256/512, rounded to a multiple
of 8), as MobileNet's width multiplier does; five numbers scale the stem and layer1..layer4 one by one
(``model.backbone_stage_widths``). A detector trained from scratch on a CPU budget sees more images per
minute with a narrower network (``benchmarks/README.md`` has the ablation). The blocks are torchvision's
``BasicBlock`` / ``Bottleneck`` under torchvision's module names, so at ``width = 1`` the network is
torchvision's ResNet and its pretrained weights load; another width has no pretrained weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import cast

import torchvision
from torch import Tensor, nn
from torchvision.models import ResNet
from torchvision.models.resnet import BasicBlock, Bottleneck

from cvkit.models.backbones._load import load_torchvision_state
from cvkit.models.backbones.base import Backbone

__all__ = ["resnet18", "resnet34", "resnet50", "stage_widths"]

Width = float | Sequence[float]


_BLOCKS: dict[str, tuple[type[BasicBlock] | type[Bottleneck], list[int]]] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}


def scaled_channels(channels: int, width: float) -> int:
    """``channels * width`` rounded to the nearest multiple of 8 (at least 8)."""
    return max(8, int(round(channels * width / 8.0)) * 8)


def stage_widths(width: Width, what: str = "model.backbone_width") -> tuple[float, ...]:
    """The five multipliers (stem, layer1..layer4) of ``width``: one number for all, or five; each > 0."""
    widths = (float(width),) * 5 if isinstance(width, (int, float)) else tuple(float(w) for w in width)
    if len(widths) != 5:
        raise ValueError(f"{what} takes one multiplier or five (stem, layer1..layer4), got {len(widths)}")
    if not all(w > 0 for w in widths):
        raise ValueError(f"{what} must be > 0, got {list(widths)}")
    return widths


class _NarrowResNet(ResNet):
    """torchvision's ResNet with its stem's and stages' widths scaled (torchvision fixes them at 64, 64, 128,
    256, 512)."""

    def __init__(self, name: str, width: Width) -> None:
        block, layers = _BLOCKS[name]
        super().__init__(block, layers)  # builds the full-width layers; replaced below with the same names
        widths = stage_widths(width)
        stem = scaled_channels(64, widths[0])
        planes = [scaled_channels(c, w) for c, w in zip((64, 128, 256, 512), widths[1:], strict=True)]
        self.inplanes = stem
        self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.layer1 = self._make_layer(block, planes[0], layers[0])  # a 1x1 projection when stem != planes[0]
        self.layer2 = self._make_layer(block, planes[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, planes[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, planes[3], layers[3], stride=2)
        self.fc = nn.Identity()
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)


def _resnet(factory: Callable[..., ResNet], name: str, state_dict: Mapping[str, Tensor] | None,
            width: Width = 1.0) -> Backbone:
    if set(stage_widths(width)) == {1.0}:
        net = factory(weights=None)
    else:
        if state_dict is not None:
            raise ValueError(
                f"pretrained {name} weights are full width; they do not fit model.backbone_width={width}"
            )
        net = _NarrowResNet(name, width)
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


def resnet18(state_dict: Mapping[str, Tensor] | None = None, width: Width = 1.0) -> Backbone:
    """ResNet-18 backbone; ``state_dict``: torchvision ``resnet18`` weights (``fc.*`` optional);
    ``width``: channel multiplier, or five (stem, layer1..layer4)."""
    return _resnet(torchvision.models.resnet18, "resnet18", state_dict, width)


def resnet34(state_dict: Mapping[str, Tensor] | None = None, width: Width = 1.0) -> Backbone:
    """ResNet-34 backbone; ``state_dict``: torchvision ``resnet34`` weights (``fc.*`` optional);
    ``width``: channel multiplier, or five (stem, layer1..layer4)."""
    return _resnet(torchvision.models.resnet34, "resnet34", state_dict, width)


def resnet50(state_dict: Mapping[str, Tensor] | None = None, width: Width = 1.0) -> Backbone:
    """ResNet-50 backbone; ``state_dict``: torchvision ``resnet50`` weights (``fc.*`` optional);
    ``width``: channel multiplier, or five (stem, layer1..layer4)."""
    return _resnet(torchvision.models.resnet50, "resnet50", state_dict, width)
