"""Inference-only copies of a model with BatchNorm folded into the convolution before it.

``fold_batchnorm(model)`` returns a deep copy in eval mode in which every ``BatchNorm2d`` that directly
follows a ``Conv2d`` (consecutive children of an ``nn.Sequential``, or ResNet's ``convN``/``bnN`` and
``downsample`` pairs) is folded into that convolution and replaced by ``nn.Identity``:

    w' = w * gamma / sqrt(var + eps),  b' = (b - mean) * gamma / sqrt(var + eps) + beta

so ``fold_batchnorm(model)(x) == model.eval()(x)`` up to float rounding, with one pass over every
activation less per folded pair. BatchNorms that precede their convolution (DenseNet's pre-activation
layers) are left as they are. The copy cannot be trained (its ``train(True)`` raises); the original model
is not changed.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fold_batchnorm"]

_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))


def _fold_into(parent: nn.Module, conv_name: str, bn_name: str) -> bool:
    conv, bn = getattr(parent, conv_name, None), getattr(parent, bn_name, None)
    if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d) or not bn.track_running_stats:
        return False
    fused = fuse_conv_bn_eval(conv, bn)
    if conv.weight.is_contiguous(memory_format=torch.channels_last):
        fused.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs omit memory_format
    setattr(parent, conv_name, fused)
    setattr(parent, bn_name, nn.Identity())
    return True


def _no_training(self: nn.Module, mode: bool = True) -> nn.Module:
    if mode:
        raise RuntimeError("this model has BatchNorm folded into its convolutions (fold_batchnorm): inference only")
    return nn.Module.train(self, False)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with Conv2d -> BatchNorm2d pairs folded (see the module docstring)."""
    folded = copy.deepcopy(model).eval()
    count = 0
    for module in list(folded.modules()):
        if isinstance(module, nn.Sequential):
            names = [name for name, _ in module.named_children()]
            for first, second in zip(names, names[1:]):
                count += _fold_into(module, first, second)
        for conv_name, bn_name in _PAIRS:
            count += _fold_into(module, conv_name, bn_name)
    folded.num_folded_batchnorms = count  # type: ignore[assignment]  # Module.__setattr__ is typed Tensor | Module only
    folded.train = _no_training.__get__(folded)  # type: ignore[method-assign]
    return folded
