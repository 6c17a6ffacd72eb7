"""Training criteria: ``criterion(outputs, targets) -> dict of scalar losses`` with the total under "loss"."""

from cvkit.losses.config import LossConfig
from cvkit.losses.multibox import MultiBoxLoss, build_targets, elementwise_giou

__all__ = ["LossConfig", "MultiBoxLoss", "build_targets", "elementwise_giou"]
