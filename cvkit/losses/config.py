"""The ``loss:`` config section (re-exported as ``cvkit.models.config.LossConfig``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["LossConfig"]


@dataclass(frozen=True)
class LossConfig:
    """The ``loss:`` section: the criterion (classification + box regression) and, for ``arch: dense``, the
    assigner. ``arch: ssd`` (softmax logits) takes ``ce`` / ``focal``; ``arch: dense`` (sigmoid logits) takes
    ``qfl`` / ``sigmoid_focal``."""

    cls_loss: Literal["ce", "focal", "qfl", "sigmoid_focal"] = "ce"  # ce | focal (softmax) | qfl | sigmoid_focal
    neg_pos_ratio: float = 3.0  # ce: hard negatives kept per positive anchor (SSD: 3)
    focal_alpha: float = 0.25  # focal: weight of positive anchors (negatives get 1 - alpha)
    focal_gamma: float = 2.0  # focal: focusing exponent
    box_loss: Literal["smooth_l1", "giou", "diou"] = "smooth_l1"  # smooth_l1 on deltas | giou / diou on decoded boxes
    smooth_l1_beta: float = 1.0  # smooth_l1: transition point between the quadratic and linear parts
    box_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)  # BoxCoder weights (SSD variances 0.1, 0.2)
    cls_weight: float = 1.0  # weight of loss_cls in the total
    box_weight: float = 1.0  # weight of loss_box in the total
    qfl_beta: float = 2.0  # qfl: exponent of |target - sigmoid| (quality focal loss)
    assigner: Literal["max_iou", "atss"] = "max_iou"  # arch dense: max_iou (anchors.matcher) | atss (adaptive)
    atss_topk: int = 9  # atss: candidates per level and ground truth (nearest anchor centres)
