"""VGG-16 backbones (torchvision vgg16, vgg16_bn) in SSD300's layout: taps conv4_3 (L2Norm) and conv7.

Stages (split at the max-pools of ``features``): 0 conv1_x + pool1, 1 conv2_x + pool2, 2 conv3_x + pool3
(``ceil_mode`` so 75 -> 38 on a 300x300 input, as in SSD), 3 conv4_x, 4 pool4 + conv5_x, and one new
stage 5: pool5 (3x3, stride 1), conv6 (3x3, dilation 6, 1024 channels), conv7 (1x1, 1024 channels).
Taps: stage 3 (conv4_3, stride 8, 512 channels, scaled by a learned L2Norm) and stage 5 (conv7,
stride 16, 1024 channels): 38x38 and 19x19 on a 300x300 input. conv6/conv7 start from a fresh
initialisation (the classifier's fc6/fc7 are not converted).
"""

from __future__ import annotations

from collections.abc import Mapping

import torchvision
from torch import Tensor, nn

from cvkit.models.backbones._load import load_torchvision_state
from cvkit.models.backbones.base import Backbone, L2Norm

__all__ = ["vgg16", "vgg16_bn"]


class _VGGFeatures(nn.Module):
    """torchvision's VGG without the classifier (its 120M parameters are never used): same ``features.*`` keys."""

    def __init__(self, batch_norm: bool) -> None:
        super().__init__()
        self.features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"], batch_norm=batch_norm)
        for m in self.features.modules():  # torchvision VGG's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:  # always true: make_layers builds its convs with a bias
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


def _vgg(batch_norm: bool, name: str, state_dict: Mapping[str, Tensor] | None) -> Backbone:
    net = _VGGFeatures(batch_norm)
    if state_dict is not None:
        load_torchvision_state(net, state_dict, ("classifier.",), name)
    layers = list(net.features)
    pools = [i for i, layer in enumerate(layers) if isinstance(layer, nn.MaxPool2d)]  # 5 pools
    pool1, pool2, pool3, pool4, _pool5 = pools
    layers[pool3].ceil_mode = True
    conv6 = nn.Conv2d(512, 1024, kernel_size=3, padding=6, dilation=6)
    conv7 = nn.Conv2d(1024, 1024, kernel_size=1)
    for conv in (conv6, conv7):
        nn.init.xavier_uniform_(conv.weight)
        if conv.bias is not None:  # always true (bias=True above)
            nn.init.zeros_(conv.bias)
    stages = [
        nn.Sequential(*layers[: pool1 + 1]),
        nn.Sequential(*layers[pool1 + 1 : pool2 + 1]),
        nn.Sequential(*layers[pool2 + 1 : pool3 + 1]),
        nn.Sequential(*layers[pool3 + 1 : pool4]),
        nn.Sequential(*layers[pool4:_pool5]),
        nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
            conv6,
            nn.ReLU(inplace=True),
            conv7,
            nn.ReLU(inplace=True),
        ),
    ]
    return Backbone(
        stages,
        taps=(3, 5),
        out_channels=(512, 1024),
        strides=(8, 16),
        num_pretrained_stages=5,
        tap_norms={3: L2Norm(512)},
    )


def vgg16(state_dict: Mapping[str, Tensor] | None = None) -> Backbone:
    """VGG-16 backbone; ``state_dict``: torchvision ``vgg16`` weights (``classifier.*`` optional)."""
    return _vgg(False, "vgg16", state_dict)


def vgg16_bn(state_dict: Mapping[str, Tensor] | None = None) -> Backbone:
    """VGG-16 with BatchNorm; ``state_dict``: torchvision ``vgg16_bn`` weights (``classifier.*`` optional)."""
    return _vgg(True, "vgg16_bn", state_dict)
