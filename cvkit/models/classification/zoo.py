"""The classic classifiers of the d2l chapters, all as one :class:`Classifier`: ``normalizer -> stages -> head``.

Glossary: B batch, C classes (``num_classes``), H, W input size, ``in_channels`` input channels.

    model(images)  images uint8 (B, in_channels, H, W)  ->  logits float32 (B, C)

The first module, ``model.normalizer`` (:class:`cvkit.models.preprocess.ImageNormalizer`), normalizes uint8
images from its ``pixel_mean`` / ``pixel_std`` buffers (ImageNet's statistics here;
:func:`cvkit.models.classification.build.build_classifier` sets the config's); float images are taken as
already normalized and pass through unchanged.

Every builder has the same interface ``builder(num_classes, in_channels=3, small_input=False, dropout=0.5,
hidden_dim=0, tv_weights=None) -> Classifier``:

- ``stages[0]`` is the stem, ``stages[1:]`` the feature stages (what ``freeze_stages`` counts);
  ``head`` is ``pool -> flatten -> ... -> fc`` and ``head.fc`` is the classifier layer (a fresh one with
  :meth:`Classifier.reset_classifier`; its learning rate is ``lr * head_lr_mult``).
- ``small_input=True`` adapts the network to small images (28x28 and up): the stem's first conv becomes
  3x3 stride 1 (the stem's pooling stays, so the stem still halves the size) and every pooling layer rounds
  up (``ceil_mode``), so no feature map shrinks to zero. ``False`` keeps torchvision's architecture exactly
  (what its pretrained weights were trained with), for inputs of 64x64 and more. The final pooling is always
  adaptive, so the logits are (B, C) for any input size that does not break the stages.
- ``tv_weights``: a torchvision-format state_dict of the same architecture, loaded into the torchvision
  model before its layers are reused (the file's classifier layer is ignored). The first conv is then
  adapted: other ``in_channels`` get the RGB kernels' mean, repeated (greyscale: the sum of the RGB kernels
  equals the mean repeated three times, up to the 3/in_channels scale applied); a small-input stem (a
  different kernel size) starts from random weights.

From torchvision: alexnet, vgg11, vgg16, googlenet, resnet18/34/50, densenet121. Written here (no
torchvision counterpart): lenet, lenet_bn, mlp (dropout), nin, resnet_mini (a narrow ResNet for CPU runs).
These take no ``tv_weights``; load cvkit checkpoints through
:func:`cvkit.models.classification.build.build_classifier` instead.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

import torch
import torchvision
from torch import Tensor, nn

from cvkit.models.backbones._load import load_torchvision_state
from cvkit.models.param_groups import part_param_groups
from cvkit.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, ImageNormalizer, channel_stats

__all__ = ["Classifier", "lenet", "lenet_bn", "mlp", "alexnet", "vgg11", "vgg16", "nin", "googlenet", "resnet18",
           "resnet34",
           "resnet50", "resnet_mini", "densenet121"]


class Classifier(nn.Module):
    """``normalizer``, then ``stages`` (stem first), then ``head`` (ending in ``head.fc``); see the module
    docstring. The normalizer gets ImageNet's mean/std (their average per channel when ``in_channels != 3``)
    unless ``normalizer`` is given."""

    def __init__(self, name: str, stages: Iterable[nn.Module], head: nn.Sequential,
                 make_fc: Callable[[int], nn.Module], num_classes: int, in_channels: int,
                 normalizer: ImageNormalizer | None = None):
        super().__init__()
        self.name = name
        self.normalizer = normalizer if normalizer is not None else ImageNormalizer(
            channel_stats(IMAGENET_MEAN, in_channels), channel_stats(IMAGENET_STD, in_channels))
        self.stages = nn.ModuleList(stages)
        self.head = head
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.head_lr_mult = 1.0
        self.frozen_stages = 0
        self._make_fc = make_fc

    def forward(self, images: Tensor) -> Tensor:
        """Logits ``(B, C)`` for uint8 ``images`` ``(B, in_channels, H, W)`` (or already normalized floats)."""
        x = self.normalizer(images)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace ``head.fc`` by a freshly initialised layer with ``num_classes`` outputs."""
        self.head.fc = self._make_fc(num_classes)
        self.num_classes = num_classes

    def freeze(self, num_stages: int) -> None:
        """Freeze ``stages[:num_stages]`` (no gradients; their BatchNorm layers stay in eval mode)."""
        if num_stages > len(self.stages):
            raise ValueError(f"{self.name} has {len(self.stages)} stages; cannot freeze {num_stages}")
        self.frozen_stages = num_stages
        for i, stage in enumerate(self.stages):
            for p in stage.parameters():
                p.requires_grad_(i >= num_stages)
        self.train(self.training)

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        for stage in self.stages[: self.frozen_stages]:
            stage.eval()
        return self

    def param_groups(self, lr: float, weight_decay: float, no_decay_norm_bias: bool = True) -> list[dict[str, Any]]:
        """Optimizer groups: ``backbone`` at ``lr``, ``head`` (the classifier layer ``head.fc``) at
        ``lr * head_lr_mult``, each split into decay / ``*_no_decay`` (the rule of
        :func:`cvkit.models.param_groups.skips_weight_decay`) when ``no_decay_norm_bias``. Frozen parameters
        are left out; empty groups are dropped."""
        fc_params = {id(p) for p in self.head.get_submodule("fc").parameters()}
        return part_param_groups(self, lr, weight_decay, no_decay_norm_bias,
                                 parts=(("backbone", 1.0), ("head", self.head_lr_mult)),
                                 part_of=lambda p: "head" if id(p) in fc_params else "backbone")


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def _linear_fc(in_features: int) -> Callable[[int], nn.Module]:
    return lambda num_classes: nn.Linear(in_features, num_classes)


def _pool_head(in_features: int, num_classes: int, dropout: float = 0.0, relu: bool = False) -> nn.Sequential:
    layers: list[tuple[str, nn.Module]] = []
    if relu:
        layers.append(("relu", nn.ReLU(inplace=True)))
    layers += [("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten(1))]
    if dropout > 0:
        layers.append(("dropout", nn.Dropout(dropout)))
    layers.append(("fc", nn.Linear(in_features, num_classes)))
    return nn.Sequential(OrderedDict(layers))


def _mlp_head(in_features: int, pooled: tuple[int, int], hidden: int, num_classes: int,
              dropout: float) -> nn.Sequential:
    """AlexNet/VGG classifier: adaptive pool to ``pooled`` -> (dropout, linear, relu) x 2 -> fc."""
    return nn.Sequential(OrderedDict([
        ("pool", nn.AdaptiveAvgPool2d(pooled)),
        ("flatten", nn.Flatten(1)),
        ("dropout1", nn.Dropout(dropout)),
        ("fc1", nn.Linear(in_features * pooled[0] * pooled[1], hidden)),
        ("relu1", nn.ReLU(inplace=True)),
        ("dropout2", nn.Dropout(dropout)),
        ("fc2", nn.Linear(hidden, hidden)),
        ("relu2", nn.ReLU(inplace=True)),
        ("fc", nn.Linear(hidden, num_classes)),
    ]))


def _new_conv(old: nn.Conv2d, in_channels: int, small: bool) -> nn.Conv2d:
    """``old`` for ``in_channels`` inputs (and a 3x3 stride-1 kernel when ``small``), weights carried over
    where the kernel shape allows (see the module docstring)."""
    if small:
        conv = nn.Conv2d(in_channels, old.out_channels, 3, 1, 1, bias=old.bias is not None)
    else:
        # a Conv2d's kernel_size / stride / padding are 2-tuples (or a padding string); the stubs say tuple[int, ...]
        conv = nn.Conv2d(in_channels, old.out_channels, cast("tuple[int, int]", old.kernel_size),
                         cast("tuple[int, int]", old.stride), cast("str | tuple[int, int]", old.padding),
                         bias=old.bias is not None)
    if conv.weight.shape[2:] == old.weight.shape[2:]:
        with torch.no_grad():
            if in_channels == old.in_channels:
                conv.weight.copy_(old.weight)
            else:
                mean = old.weight.mean(dim=1, keepdim=True)  # (O, 1, k, k)
                conv.weight.copy_(mean.repeat(1, in_channels, 1, 1) * (old.in_channels / in_channels))
            if old.bias is not None and conv.bias is not None:  # conv has a bias exactly when old has one
                conv.bias.copy_(old.bias)
    return conv


def _ceil_pools(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            m.ceil_mode = True


def _check_no_weights(name: str, tv_weights: Mapping[str, Tensor] | None) -> None:
    if tv_weights is not None:
        raise ValueError(f"{name} has no torchvision counterpart: load a cvkit checkpoint, not torchvision weights")


def _load(model: nn.Module, tv_weights: Mapping[str, Tensor] | None, unused: tuple[str, ...], name: str) -> None:
    if tv_weights is not None:
        load_torchvision_state(model, tv_weights, unused, name)


# ------------------------------------------------------------------------------------------------
# written in cvkit (d2l): LeNet, MLP, NiN
# ------------------------------------------------------------------------------------------------


def lenet(num_classes: int, in_channels: int = 3, small_input: bool = False, dropout: float = 0.5,
          hidden_dim: int = 0, tv_weights: Mapping[str, Tensor] | None = None) -> Classifier:
    """LeNet-5 (d2l 7.6) with ReLU: conv5-6 -> avgpool -> conv5-16 -> avgpool -> adaptive pool 5x5 -> 120 -> 84 -> C."""
    _check_no_weights("lenet", tv_weights)
    stages = [
        nn.Sequential(nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(inplace=True),
                      nn.AvgPool2d(2, 2, ceil_mode=True)),
        nn.Sequential(nn.Conv2d(6, 16, 5, padding=2 if small_input else 0), nn.ReLU(inplace=True),
                      nn.AvgPool2d(2, 2, ceil_mode=True)),
    ]
    head = nn.Sequential(OrderedDict([
        ("pool", nn.AdaptiveAvgPool2d((5, 5))), ("flatten", nn.Flatten(1)),
        ("fc1", nn.Linear(16 * 25, 120)), ("relu1", nn.ReLU(inplace=True)),
        ("fc2", nn.Linear(120, 84)), ("relu2", nn.ReLU(inplace=True)),
        ("fc", nn.Linear(84, num_classes)),
    ]))
    return Classifier("lenet", stages, head, _linear_fc(84), num_classes, in_channels)


def lenet_bn(num_classes: int, in_channels: int = 3, small_input: bool = False, dropout: float = 0.5,
             hidden_dim: int = 0, tv_weights: Mapping[str, Tensor] | None = None) -> Classifier:
    """LeNet with batch normalization (d2l 8.5): BatchNorm after every conv and hidden linear layer, ReLU,
    max pools; channels 6 -> 16 (``hidden_dim`` > 0 scales them to hidden_dim / 16 times), adaptive 5x5 pool,
    120 -> 84 -> C."""
    _check_no_weights("lenet_bn", tv_weights)
    scale = max(hidden_dim // 16, 1) if hidden_dim else 1
    c1, c2 = 6 * scale, 16 * scale
    stages = [
        nn.Sequential(nn.Conv2d(in_channels, c1, 5, padding=2), nn.BatchNorm2d(c1), nn.ReLU(inplace=True),
                      nn.MaxPool2d(2, 2, ceil_mode=True)),
        nn.Sequential(nn.Conv2d(c1, c2, 5, padding=2), nn.BatchNorm2d(c2), nn.ReLU(inplace=True),
                      nn.MaxPool2d(2, 2, ceil_mode=True)),
    ]
    head = nn.Sequential(OrderedDict([
        ("pool", nn.AdaptiveAvgPool2d((5, 5))), ("flatten", nn.Flatten(1)),
        ("fc1", nn.Linear(c2 * 25, 120)), ("bn1", nn.BatchNorm1d(120)), ("relu1", nn.ReLU(inplace=True)),
        ("fc2", nn.Linear(120, 84)), ("bn2", nn.BatchNorm1d(84)), ("relu2", nn.ReLU(inplace=True)),
        ("fc", nn.Linear(84, num_classes)),
    ]))
    return Classifier("lenet_bn", stages, head, _linear_fc(84), num_classes, in_channels)


def mlp(num_classes: int, in_channels: int = 3, small_input: bool = False, dropout: float = 0.5,
        hidden_dim: int = 0, tv_weights: Mapping[str, Tensor] | None = None) -> Classifier:
    """MLP with dropout (d2l 5.6): adaptive pool to 28x28 -> flatten -> (linear, relu, dropout) x 2 -> fc.

    The 28x28 pooling is a documented layer (an average over pixel blocks, identity at 28x28), so any input
    size gives the same number of features."""
    _check_no_weights("mlp", tv_weights)
    hidden = hidden_dim or 256
    stages = [
        nn.Sequential(nn.AdaptiveAvgPool2d((28, 28)), nn.Flatten(1), nn.Linear(in_channels * 28 * 28, hidden),
                      nn.ReLU(inplace=True), nn.Dropout(dropout)),
        nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)),
    ]
    head = nn.Sequential(OrderedDict([("fc", nn.Linear(hidden, num_classes))]))
    return Classifier("mlp", stages, head, _linear_fc(hidden), num_classes, in_channels)


def _nin_block(in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding), nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 1), nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 1), nn.ReLU(inplace=True),
    )


def nin(num_classes: int, in_channels: int = 3, small_input: bool = False, dropout: float = 0.5,
        hidden_dim: int = 0, tv_weights: Mapping[str, Tensor] | None = None) -> Classifier:
    """Network in Network (d2l 8.3): NiN blocks 96/256/384 with max pools, then a NiN block with C channels
    (the classifier, ``head.fc``) and global average pooling. Pools round up (ceil_mode)."""
    _check_no_weights("nin", tv_weights)
    first = _nin_block(in_channels, 96, 3, 1, 1) if small_input else _nin_block(in_channels, 96, 11, 4, 0)
    stages = [
        nn.Sequential(first, nn.MaxPool2d(3, 2, ceil_mode=True)),
        nn.Sequential(_nin_block(96, 256, 5, 1, 2), nn.MaxPool2d(3, 2, ceil_mode=True)),
        nn.Sequential(_nin_block(256, 384, 3, 1, 1), nn.MaxPool2d(3, 2, ceil_mode=True)),
    ]
    head = nn.Sequential(OrderedDict([
        ("dropout", nn.Dropout(dropout)),
        ("fc", _nin_block(384, num_classes, 3, 1, 1)),
        ("pool", nn.AdaptiveAvgPool2d(1)),
        ("flatten", nn.Flatten(1)),
    ]))
    return Classifier("nin", stages, head, lambda c: _nin_block(384, c, 3, 1, 1), num_classes, in_channels)


# ------------------------------------------------------------------------------------------------
# from torchvision: AlexNet, VGG, GoogLeNet, ResNet, DenseNet
# ------------------------------------------------------------------------------------------------


def _torchvision_model(name: str, tv_weights: Mapping[str, Tensor] | None) -> nn.Module:
    """torchvision's AlexNet/VGG. Without weights to load, built on the meta device and only ``features``
    materialised and initialised as torchvision does (its 100M-parameter classifier is replaced anyway)."""
    if tv_weights is not None:
        return getattr(torchvision.models, name)(weights=None)
    with torch.device("meta"):
        tv = getattr(torchvision.models, name)(weights=None)
    tv.classifier = nn.Identity()
    tv.to_empty(device="cpu")
    for m in tv.features.modules():
        if isinstance(m, nn.Conv2d):
            if name.startswith("vgg"):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:  # always true: torchvision's VGG convs have a bias
                    nn.init.zeros_(m.bias)
            else:
                m.reset_parameters()
    return tv


def _split_at_pools(features: nn.Sequential) -> list[nn.Sequential]:
    """Cut a plain conv stack after every max pool (VGG/AlexNet stages)."""
    stages, current = [], []
    for layer in features:
        current.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            stages.append(nn.Sequential(*current))
            current = []
    if current:
        stages.append(nn.Sequential(*current))
    return stages


def alexnet(num_classes: int, in_channels: int = 3, small_input: bool = False, dropout: float = 0.5,
            hidden_dim: int = 0, tv_weights: Mapping[str, Tensor] | None = None) -> Classifier:
    """torchvision's AlexNet (d2l 8.1); classifier 256*6*6 -> hidden -> hidden -> C (hidden 4096 by default)."""
    hidden = hidden_dim or 4096
    tv = _torchvision_model("alexnet", tv_weights)
    _load(tv, tv_weights, ("classifier.",) if hidden != 4096 else ("classifier.6.",), "alexnet")
    features = cast(nn.Sequential, tv.features)
    features[0] = _new_conv(cast(nn.Conv2d, features[0]), in_channels, small_input)
    if small_input:
        _ceil_pools(features)
    head = _mlp_head(256, (6, 6), hidden, num_classes, dropout)
    if tv_weights is not None and hidden == 4096:
        classifier = cast(nn.Sequential, tv.classifier)
        head.get_submodule("fc1").load_state_dict(classifier[1].state_dict())
        head.get_submodule("fc2").load_state_dict(classifier[4].state_dict())
    return Classifier("alexnet", _split_at_pools(features), head, _linear_fc(hidden), num_classes, in_channels)


def _vgg(name: str, num_classes: int, in_channels: int, small_input: bool, dropout: float, hidden_dim: int,
         tv_weights: Mapping[str, Tensor] | None) -> Classifier:
    hidden = hidden_dim or 4096
    tv = _torchvision_model(name, tv_weights)
    _load(tv, tv_weights, ("classifier.",) if hidden != 4096 else ("classifier.6.",), name)
    features = cast(nn.Sequential, tv.features)
    features[0] = _new_conv(cast(nn.Conv2d, features[0]), in_channels, False)  # VGG's first conv: already 3x3/1
    if small_input:
        _ceil_pools(features)
    head = _mlp_head(512, (7, 7), hidden, num_classes, dropout)
    if tv_weights is not None and hidden == 4096:
        classifier = cast(nn.Sequential, tv.classifier)
        head.get_submodule("fc1").load_state_dict(classifier[0].state_dict())
        head.get_submodule("fc2").load_state_dict(classifier[3].state_dict())
    # stages: stem = first conv block; then the remaining blocks (each ends in a max pool)
    return Classifier(name, _split_at_pools(features), head, _linear_fc(hidden), num_classes, in_channels)


def vgg11(num_classes: int, in_channels: int = 3, small_input: bool = False, dropout: float = 0.5,
          hidden_dim: int = 0, tv_weights: Mapping[str, Tensor] | None = None) -> Classifier:
    """torchvision's VGG-11 (d2l 8.2), five conv blocks, 7x7 adaptive pool, hidden/hidden/C classifier."""
    return _vgg("vgg11", num_classes, in_channels, small_input, dropout, hidden_dim, tv_weights)


def vgg16(num_classes: int, in_channels: int = 3, small_input: bool = False, dropout: float = 0.5,
          hidden_dim: int = 0, tv_weights: Mapping[str, Tensor] | None = None) -> Classifier:
    """torchvision's VGG-16, five conv blocks, 7x7 adaptive pool, hidden/hidden/C classifier."""
    return _vgg("vgg16", num_classes, in_channels, small_input, dropout, hidden_dim, tv_weights)


def googlenet(num_classes: int, in_channels: int = 3, small_input: bool = False, dropout: float = 0.2,
              hidden_dim: int = 0, tv_weights: Mapping[str, Tensor] | None = None) -> Classifier:
    """torchvision's GoogLeNet (d2l 8.4) without the auxiliary classifiers and input transform."""
    tv = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True, transform_input=False)
    if tv_weights is not None:
        tv_weights = {k: v for k, v in tv_weights.items() if not k.startswith(("aux1.", "aux2."))}
    _load(tv, tv_weights, ("fc.",), "googlenet")
    tv.conv1.conv = _new_conv(tv.conv1.conv, in_channels, small_input)
    stages = [
        nn.Sequential(tv.conv1, tv.maxpool1, tv.conv2, tv.conv3, tv.maxpool2),
        nn.Sequential(tv.inception3a, tv.inception3b, tv.maxpool3),
        nn.Sequential(tv.inception4a, tv.inception4b, tv.inception4c, tv.inception4d, tv.inception4e, tv.maxpool4),
        nn.Sequential(tv.inception5a, tv.inception5b),
    ]
    head = _pool_head(1024, num_classes, dropout)
    return Classifier("googlenet", stages, head, _linear_fc(1024), num_classes, in_channels)


def _resnet(name: str, num_classes: int, in_channels: int, small_input: bool,
            tv_weights: Mapping[str, Tensor] | None) -> Classifier:
    tv = getattr(torchvision.models, name)(weights=None)
    _load(tv, tv_weights, ("fc.",), name)
    tv.conv1 = _new_conv(tv.conv1, in_channels, small_input)
    if small_input:
        tv.maxpool.ceil_mode = True
    stem = nn.Sequential(tv.conv1, tv.bn1, tv.relu, tv.maxpool)
    features = tv.fc.in_features
    head = _pool_head(features, num_classes)
    return Classifier(name, [stem, tv.layer1, tv.layer2, tv.layer3, tv.layer4], head, _linear_fc(features),
                      num_classes, in_channels)


def resnet18(num_classes: int, in_channels: int = 3, small_input: bool = False, dropout: float = 0.0,
             hidden_dim: int = 0, tv_weights: Mapping[str, Tensor] | None = None) -> Classifier:
    """torchvision's ResNet-18 (d2l 8.6): stem + layer1..4 (five stages), global pool, fc."""
    return _resnet("resnet18", num_classes, in_channels, small_input, tv_weights)


def resnet34(num_classes: int, in_channels: int = 3, small_input: bool = False, dropout: float = 0.0,
             hidden_dim: int = 0, tv_weights: Mapping[str, Tensor] | None = None) -> Classifier:
    """torchvision's ResNet-34: stem + layer1..4, global pool, fc."""
    return _resnet("resnet34", num_classes, in_channels, small_input, tv_weights)


def resnet50(num_classes: int, in_channels: int = 3, small_input: bool = False, dropout: float = 0.0,
             hidden_dim: int = 0, tv_weights: Mapping[str, Tensor] | None = None) -> Classifier:
    """torchvision's ResNet-50 (bottleneck blocks): stem + layer1..4, global pool, fc."""
    return _resnet("resnet50", num_classes, in_channels, small_input, tv_weights)


def resnet_mini(num_classes: int, in_channels: int = 3, small_input: bool = False, dropout: float = 0.0,
                hidden_dim: int = 0, tv_weights: Mapping[str, Tensor] | None = None) -> Classifier:
    """A narrow ResNet for quick CPU runs: torchvision's BasicBlock, one per stage, widths 32/64/128/256
    (``hidden_dim`` > 0: the first width, doubled per stage); stem 7x7/2 conv + 3x3/2 max pool (small input:
    3x3/1 conv + ceil-mode pool), global pool, fc."""
    _check_no_weights("resnet_mini", tv_weights)
    from torchvision.models.resnet import BasicBlock

    widths = [(hidden_dim or 32) * 2**i for i in range(4)]
    conv = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False) if small_input else \
        nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False)
    stem = nn.Sequential(conv, nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True),
                         nn.MaxPool2d(3, 2, 1, ceil_mode=small_input))
    stages: list[nn.Module] = [stem]
    for i, width in enumerate(widths):
        previous = widths[max(i - 1, 0)]
        stride = 1 if i == 0 else 2
        downsample = None
        if stride != 1 or previous != width:
            downsample = nn.Sequential(nn.Conv2d(previous, width, 1, stride, bias=False), nn.BatchNorm2d(width))
        stages.append(BasicBlock(previous, width, stride, downsample))
    for m in nn.ModuleList(stages).modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    head = _pool_head(widths[-1], num_classes)
    return Classifier("resnet_mini", stages, head, _linear_fc(widths[-1]), num_classes, in_channels)


def densenet121(num_classes: int, in_channels: int = 3, small_input: bool = False, dropout: float = 0.0,
                hidden_dim: int = 0, tv_weights: Mapping[str, Tensor] | None = None) -> Classifier:
    """torchvision's DenseNet-121 (d2l 8.7): stem, four dense blocks (with transitions), relu, global pool, fc."""
    tv = torchvision.models.densenet121(weights=None)
    _load(tv, tv_weights, ("classifier.",), "densenet121")
    f = tv.features
    f.conv0 = _new_conv(f.conv0, in_channels, small_input)
    if small_input:
        _ceil_pools(f)
    stages = [
        nn.Sequential(f.conv0, f.norm0, f.relu0, f.pool0),
        nn.Sequential(f.denseblock1, f.transition1),
        nn.Sequential(f.denseblock2, f.transition2),
        nn.Sequential(f.denseblock3, f.transition3),
        nn.Sequential(f.denseblock4, f.norm5),
    ]
    features = tv.classifier.in_features
    head = _pool_head(features, num_classes, relu=True)
    return Classifier("densenet121", stages, head, _linear_fc(features), num_classes, in_channels)
