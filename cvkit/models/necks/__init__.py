"""Necks: feature pyramids over a backbone's taps."""

from cvkit.models.necks.fpn import FPN, conv_norm_act

__all__ = ["FPN", "conv_norm_act"]
