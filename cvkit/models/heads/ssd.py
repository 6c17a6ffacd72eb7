"""SSD head: per level, a class convolution and a box convolution over every location's K anchors.

Glossary: B batch, L levels, K_l anchors per location of level l, (H_l, W_l) its size,
A = sum_l H_l * W_l * K_l anchors, C + 1 logits per anchor (background at index 0, see detector.py).

Anchor order of the outputs: level by level, then row-major over locations, then the K_l anchors of a
location: the order of the anchor generators (:mod:`cvkit.ops.anchors`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["SSDHead"]


class SSDHead(nn.Module):
    """Class logits and box deltas for every anchor of every level.

    Args:
        in_channels: channels of each level's feature map.
        num_anchors: K_l, anchors per location of each level.
        num_logits: logits per anchor (``num_classes + 1``).
        kernel_size: kernel of the convolutions (3 in SSD; padding keeps the map size).
    """

    def __init__(
        self, in_channels: Sequence[int], num_anchors: Sequence[int], num_logits: int, kernel_size: int = 3
    ) -> None:
        super().__init__()
        if len(in_channels) != len(num_anchors):
            raise ValueError(f"in_channels has {len(in_channels)} levels but num_anchors {len(num_anchors)}")
        pad = kernel_size // 2
        self.num_logits = int(num_logits)
        self.cls_convs = nn.ModuleList(
            nn.Conv2d(c, k * self.num_logits, kernel_size, padding=pad) for c, k in zip(in_channels, num_anchors)
        )
        self.box_convs = nn.ModuleList(
            nn.Conv2d(c, k * 4, kernel_size, padding=pad) for c, k in zip(in_channels, num_anchors)
        )
        for conv in [*self.cls_convs, *self.box_convs]:
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, features: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """L maps ``(B, C_l, H_l, W_l)`` -> class logits ``(B, A, C + 1)`` and box deltas ``(B, A, 4)``."""
        if len(features) != len(self.cls_convs):
            raise ValueError(f"SSDHead has {len(self.cls_convs)} levels but got {len(features)} feature maps")
        logits, deltas = [], []
        for x, cls_conv, box_conv in zip(features, self.cls_convs, self.box_convs):
            batch = x.shape[0]
            # (B, K*(C+1), H, W) -> (B, H, W, K*(C+1)) -> (B, H*W*K, C+1); free for channels-last maps
            logits.append(cls_conv(x).permute(0, 2, 3, 1).reshape(batch, -1, self.num_logits))
            # (B, K*4, H, W) -> (B, H, W, K*4) -> (B, H*W*K, 4)
            deltas.append(box_conv(x).permute(0, 2, 3, 1).reshape(batch, -1, 4))
        return torch.cat(logits, dim=1), torch.cat(deltas, dim=1)
