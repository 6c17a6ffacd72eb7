"""The backbone interface: a chain of stages, some of whose outputs are the detector's feature levels.

Glossary: B batch, C channels, (H, W) a feature map's size, L feature levels.

Every backbone is a :class:`Backbone`: ``stages`` run in order; the output of each stage listed in
``taps`` is a feature level (after its optional ``tap_norms`` module). ``forward(x) -> list[Tensor]``,
one ``(B, out_channels[l], H_l, W_l)`` map per tap. The first ``num_pretrained_stages`` stages hold
layers whose weights come from the torchvision classifier (they can be frozen and get the backbone
learning-rate multiplier); later stages and ``tap_norms`` are new layers (VGG's conv6/conv7, L2Norm).
Stage 0 is the stem.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["Backbone", "L2Norm"]


class L2Norm(nn.Module):
    """Normalize each location's channel vector to unit L2 norm, then scale per channel (SSD's conv4_3)."""

    def __init__(self, channels: int, scale: float = 20.0, eps: float = 1e-10) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        # (B, C, H, W) / ||x||_2 over C, times weight (C,) broadcast as (1, C, 1, 1)
        return self.weight.view(1, -1, 1, 1) * nn.functional.normalize(x, p=2.0, dim=1, eps=self.eps)


class Backbone(nn.Module):
    """Stages run in order; the outputs of ``taps`` are the feature levels (see the module docstring).

    Args:
        stages: the stages, stage 0 first.
        taps: indices of the stages whose outputs are feature levels (increasing).
        out_channels: channels of each tap.
        strides: nominal stride (input pixels per feature cell) of each tap.
        num_pretrained_stages: the first stages that come from the torchvision classifier.
        tap_norms: optional new module per tap index, applied to that tap's output (e.g. L2Norm).
    """

    def __init__(
        self,
        stages: Sequence[nn.Module],
        taps: Sequence[int],
        out_channels: Sequence[int],
        strides: Sequence[int],
        num_pretrained_stages: int,
        tap_norms: dict[int, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if len(taps) != len(out_channels) or len(taps) != len(strides):
            raise ValueError("taps, out_channels and strides must have one entry per feature level")
        if list(taps) != sorted(set(taps)) or taps[-1] >= len(stages):
            raise ValueError(f"taps must be increasing stage indices below {len(stages)}, got {list(taps)}")
        self.stages = nn.ModuleList(stages)
        self.taps = tuple(int(t) for t in taps)
        self.out_channels = [int(c) for c in out_channels]
        self.strides = [int(s) for s in strides]
        self.num_pretrained_stages = int(num_pretrained_stages)
        self.tap_norms = nn.ModuleDict({str(k): v for k, v in (tap_norms or {}).items()})

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B, 3, H, W) -> one (B, out_channels[l], H_l, W_l) map per tap."""
        features = []
        for index, stage in enumerate(self.stages[: self.taps[-1] + 1]):
            x = stage(x)
            if index in self.taps:
                norm = self.tap_norms[str(index)] if str(index) in self.tap_norms else None
                features.append(norm(x) if norm is not None else x)
        return features

    def pretrained_modules(self) -> list[nn.Module]:
        """The stages whose weights come from the torchvision classifier."""
        return list(self.stages[: self.num_pretrained_stages])
