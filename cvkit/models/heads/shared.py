"""A head shared across levels: class and box towers whose convolutions every level uses, one norm per level.

With ``shared=False`` every level gets its own tower and output convolutions instead (SSD's per-level
heads, with the same towers), the ablation of sharing: L times the head's parameters, the same compute.

Glossary: B batch, A anchors, K anchors per location, C foreground classes, L levels.

Per level ``l`` (``C_f`` channels in, the neck's)::

    cls tower   num_convs x (conv3x3 shared -> norm of level l -> ReLU) -> conv3x3 -> (B, K*C, H_l, W_l)
    box tower   num_convs x (conv3x3 shared -> norm of level l -> ReLU) -> conv3x3 -> (B, K*4, H_l, W_l)

The class logits are per-class sigmoid logits (no background logit); their bias starts at
``-log((1 - prior_prob) / prior_prob)``, so every anchor first predicts ``prior_prob`` for every class
(RetinaNet's initialisation: training starts off the constant-predictor plateau). Norms are per level
because the levels' statistics differ (shared BatchNorm statistics would mix them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from cvkit.models.necks.fpn import norm_layer

__all__ = ["SharedHead"]


class _Tower(nn.Module):
    """``num_convs`` x (conv3x3 -> norm -> ReLU); norms always per level, convs shared or per level.

    Shared: ``convs.<i>``; per level: ``level_convs.<l>.<i>`` (a shared checkpoint's keys stay as they were).
    """

    def __init__(self, channels: int, num_convs: int, num_levels: int, norm: str, shared: bool = True) -> None:
        super().__init__()

        def convs() -> nn.ModuleList:
            return nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1, bias=norm == "none")
                                 for _ in range(num_convs))

        self.shared = bool(shared)
        if self.shared:
            self.convs = convs()
        else:
            self.level_convs = nn.ModuleList(convs() for _ in range(num_levels))
        self.norms = nn.ModuleList(nn.ModuleList(norm_layer(norm, channels) for _ in range(num_convs))
                                   for _ in range(num_levels))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor, level: int) -> Tensor:
        norms = self.norms[level]
        convs = self.convs if self.shared else self.level_convs[level]
        assert isinstance(norms, nn.ModuleList) and isinstance(convs, nn.ModuleList)
        for conv, norm in zip(convs, norms):
            x = self.act(norm(conv(x)))
        return x


class SharedHead(nn.Module):
    """Sigmoid class logits ``(B, A, C)`` and box deltas ``(B, A, 4)`` (see the module docstring).

    Args:
        channels: channels of every level's feature map.
        num_levels: L.
        num_anchors: K, anchors per location (the same on every level).
        num_classes: C.
        num_convs: convolutions per tower.
        norm: ``bn`` | ``gn`` | ``none``.
        prior_prob: the initial foreground probability of every class.
        shared: one set of convolutions for every level (False: a tower and output convs per level).
    """

    def __init__(self, channels: int, num_levels: int, num_anchors: int, num_classes: int, num_convs: int = 2,
                 norm: str = "bn", prior_prob: float = 0.01, shared: bool = True) -> None:
        super().__init__()
        if not 0 < prior_prob < 1:
            raise ValueError(f"prior_prob must be in (0, 1), got {prior_prob}")
        self.num_classes, self.num_anchors, self.num_levels = int(num_classes), int(num_anchors), int(num_levels)
        self.shared = bool(shared)
        self.cls_tower = _Tower(channels, num_convs, num_levels, norm, self.shared)
        self.box_tower = _Tower(channels, num_convs, num_levels, norm, self.shared)
        if self.shared:
            self.cls_out = nn.Conv2d(channels, num_anchors * num_classes, 3, padding=1)
            self.box_out = nn.Conv2d(channels, num_anchors * 4, 3, padding=1)
        else:
            self.cls_outs = nn.ModuleList(nn.Conv2d(channels, num_anchors * num_classes, 3, padding=1)
                                          for _ in range(num_levels))
            self.box_outs = nn.ModuleList(nn.Conv2d(channels, num_anchors * 4, 3, padding=1)
                                          for _ in range(num_levels))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        bias = -math.log((1 - prior_prob) / prior_prob)
        for level in range(self.num_levels):
            cls_bias = self._cls_out(level).bias
            assert cls_bias is not None
            nn.init.constant_(cls_bias, bias)

    def _cls_out(self, level: int) -> nn.Conv2d:
        conv = self.cls_out if self.shared else self.cls_outs[level]
        assert isinstance(conv, nn.Conv2d)
        return conv

    def _box_out(self, level: int) -> nn.Conv2d:
        conv = self.box_out if self.shared else self.box_outs[level]
        assert isinstance(conv, nn.Conv2d)
        return conv

    def forward(self, features: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """L maps ``(B, channels, H_l, W_l)`` -> class logits ``(B, A, C)`` and box deltas ``(B, A, 4)``."""
        if len(features) != self.num_levels:
            raise ValueError(f"SharedHead has {self.num_levels} levels but got {len(features)} feature maps")
        logits, deltas = [], []
        for level, x in enumerate(features):
            batch = x.shape[0]
            # (B, K*C, H, W) -> (B, H, W, K*C) -> (B, H*W*K, C); free for channels-last maps
            cls = self._cls_out(level)(self.cls_tower(x, level))
            logits.append(cls.permute(0, 2, 3, 1).reshape(batch, -1, self.num_classes))
            # (B, K*4, H, W) -> (B, H, W, K*4) -> (B, H*W*K, 4)
            box = self._box_out(level)(self.box_tower(x, level))
            deltas.append(box.permute(0, 2, 3, 1).reshape(batch, -1, 4))
        return torch.cat(logits, dim=1), torch.cat(deltas, dim=1)
