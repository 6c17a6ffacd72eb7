"""A light feature pyramid: FPN's top-down path, optionally PANet's bottom-up path, and extra levels.

Glossary: B batch, L levels, C the neck's channels, (H_l, W_l) level l's size (stride 2 between levels).

For backbone taps ``c_0 .. c_{L-1}`` (finest first)::

    lateral_l  = conv1x1(c_l)                          (B, C, H_l, W_l), with norm
    top-down   t_{L-1} = lateral_{L-1};  t_l = lateral_l + upsample_nearest(t_{l+1}, size of level l)
    smoothed   p_l = conv3x3(t_l)                      with norm and ReLU
    bottom-up  (pan) q_0 = p_0;  q_l = conv3x3(p_l + conv3x3_stride2(q_{l-1}))
    extra      each extra level: conv3x3_stride2 of the previous last level

Every convolution is followed by a norm (``bn``: BatchNorm, ``gn``: GroupNorm with 16 groups, ``none``) and,
except the laterals, a ReLU (ScratchDet: normalization everywhere is what lets a detector train from scratch).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FPN", "conv_norm_act", "norm_layer"]


def norm_layer(kind: str, channels: int) -> nn.Module:
    """``bn`` BatchNorm2d, ``gn`` GroupNorm (16 groups, or fewer when ``channels`` is not divisible), ``none``."""
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "gn":
        groups = next(g for g in (16, 8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; valid: bn, gn, none")


def conv_norm_act(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, norm: str = "bn",
                  act: bool = True) -> nn.Sequential:
    """conv (no bias when normalized) -> norm -> ReLU."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                                         bias=norm == "none"), norm_layer(norm, out_channels)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class FPN(nn.Module):
    """Feature pyramid over the taps (see the module docstring).

    Args:
        in_channels: channels of each tap, finest first.
        channels: channels C of every output level.
        pan: add the bottom-up path.
        extra_levels: stride-2 levels after the last tap.
        norm: ``bn`` | ``gn`` | ``none``.
    """

    def __init__(self, in_channels: Sequence[int], channels: int = 96, pan: bool = True, extra_levels: int = 0,
                 norm: str = "bn") -> None:
        super().__init__()
        if not in_channels:
            raise ValueError("FPN needs at least one input level")
        self.laterals = nn.ModuleList(conv_norm_act(c, channels, 1, norm=norm, act=False) for c in in_channels)
        self.smooth = nn.ModuleList(conv_norm_act(channels, channels, 3, norm=norm) for _ in in_channels)
        self.pan = bool(pan)
        num = len(in_channels)
        num_up = num - 1 if pan else 0
        self.down = nn.ModuleList(conv_norm_act(channels, channels, 3, 2, norm) for _ in range(num_up))
        self.pan_out = nn.ModuleList(conv_norm_act(channels, channels, 3, norm=norm) for _ in range(num_up))
        self.extra = nn.ModuleList(conv_norm_act(channels, channels, 3, 2, norm) for _ in range(extra_levels))
        self.out_channels = [int(channels)] * (num + int(extra_levels))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, taps: Sequence[Tensor]) -> list[Tensor]:
        """L taps ``(B, C_l, H_l, W_l)`` -> L + extra_levels maps ``(B, C, H_l, W_l)``."""
        if len(taps) != len(self.laterals):
            raise ValueError(f"FPN was built for {len(self.laterals)} taps, got {len(taps)}")
        lateral = [conv(x) for conv, x in zip(self.laterals, taps)]
        for level in range(len(lateral) - 2, -1, -1):
            lateral[level] = lateral[level] + F.interpolate(lateral[level + 1], size=lateral[level].shape[-2:],
                                                            mode="nearest")
        outs = [conv(x) for conv, x in zip(self.smooth, lateral)]
        if self.pan:
            for level in range(1, len(outs)):
                height, width = outs[level].shape[-2:]
                below = self.down[level - 1](outs[level - 1])[..., :height, :width]  # odd sizes round up
                outs[level] = self.pan_out[level - 1](outs[level] + below)
        for conv in self.extra:
            outs.append(conv(outs[-1]))
        return outs
