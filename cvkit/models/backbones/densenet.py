"""DenseNet-121 backbone (torchvision densenet121): taps after dense blocks 2, 3 and 4 (strides 8, 16, 32).

A tap must be normalized, and in DenseNet a block's output is normalized by the *next* transition's
BatchNorm + ReLU, so the stages are cut inside the transitions:

    0 conv0, norm0, relu0, pool0
    1 denseblock1, transition1.norm, relu
    2 transition1.conv, pool, denseblock2, transition2.norm, relu      -> tap, 512 channels, stride 8
    3 transition2.conv, pool, denseblock3, transition3.norm, relu      -> tap, 1024 channels, stride 16
    4 transition3.conv, pool, denseblock4, norm5, relu                 -> tap, 1024 channels, stride 32

The transitions' 2x2 average pools use ``ceil_mode`` (no weights change), so a 300x300 input gives
38x38, 19x19 and 10x10, SSD300's first three levels.
"""

from __future__ import annotations

from collections.abc import Mapping

import torchvision
from torch import Tensor, nn

from cvkit.models.backbones._load import load_torchvision_state
from cvkit.models.backbones.base import Backbone

__all__ = ["densenet121"]


def densenet121(state_dict: Mapping[str, Tensor] | None = None) -> Backbone:
    """DenseNet-121 backbone; ``state_dict``: torchvision ``densenet121`` weights (``classifier.*`` optional)."""
    net = torchvision.models.densenet121(weights=None)
    if state_dict is not None:
        load_torchvision_state(net, state_dict, ("classifier.",), "densenet121")
    f = net.features
    for transition in (f.transition1, f.transition2, f.transition3):
        transition.pool.ceil_mode = True
    stages = [
        nn.Sequential(f.conv0, f.norm0, f.relu0, f.pool0),
        nn.Sequential(f.denseblock1, f.transition1.norm, f.transition1.relu),
        nn.Sequential(f.transition1.conv, f.transition1.pool, f.denseblock2, f.transition2.norm, f.transition2.relu),
        nn.Sequential(f.transition2.conv, f.transition2.pool, f.denseblock3, f.transition3.norm, f.transition3.relu),
        nn.Sequential(f.transition3.conv, f.transition3.pool, f.denseblock4, f.norm5, nn.ReLU(inplace=True)),
    ]
    return Backbone(
        stages,
        taps=(2, 3, 4),
        out_channels=(f.transition2.norm.num_features, f.transition3.norm.num_features, f.norm5.num_features),
        strides=(8, 16, 32),
        num_pretrained_stages=5,
    )
