"""The dense detector's loss: assignment (ATSS or max-IoU), sigmoid classification (quality focal or focal)
and an IoU-family box loss on decoded boxes.

Glossary: B batch, A anchors, M ground truths per image (padded), C foreground classes, P positive anchors.
The class logits are per-class sigmoid logits ``(B, A, C)`` with no background logit
(:class:`cvkit.models.detector.DenseDetector`); a positive anchor of ground truth label ``l`` has class ``l``.

Per batch, with ``N = max(1, P)``::

    assignment  atss:    cvkit.ops.atss.atss_assign (needs outputs["num_anchors_per_level"])
                max_iou: cvkit.ops.match_anchors with anchors.matcher (its ignore band is excluded)
    loss_cls    qfl:     sum over anchors and classes of BCE(x, y) * |y - sigmoid(x)|^beta / N, where y is the
                         IoU of the positive's decoded box with its ground truth (detached) at its class, else 0
                         (quality focal loss, Li et al., "Generalized Focal Loss", 2020)
                sigmoid_focal: sum of alpha_t (1 - p_t)^gamma BCE(x, y) / N with y in {0, 1}
                         (Lin et al., "Focal Loss for Dense Object Detection", 2017)
    loss_box    giou / diou: sum over positives of (1 - GIoU or DIoU(decode(deltas, anchor), gt)) / N;
                smooth_l1: on encoded deltas, / N
    loss        cls_weight * loss_cls + box_weight * loss_box
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from cvkit.losses.config import LossConfig
from cvkit.losses.multibox import _pad_targets, elementwise_diou, elementwise_giou, elementwise_iou
from cvkit.ops.assign import IGNORE, MatcherConfig
from cvkit.ops.atss import atss_assign
from cvkit.ops.coder import BoxCoder

__all__ = ["DenseLoss", "quality_focal_loss", "sigmoid_focal_loss"]


def quality_focal_loss(logits: Tensor, targets: Tensor, beta: float = 2.0) -> Tensor:
    """Element-wise QFL: ``BCE(logits, targets) * |targets - sigmoid(logits)|^beta`` (same shape)."""
    scale = (targets - logits.sigmoid()).abs().pow(beta)
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * scale


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Element-wise sigmoid focal loss with binary ``targets`` (same shape)."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * (1 - p_t).pow(gamma) * ce


class DenseLoss:
    """``criterion(outputs, targets) -> {"loss", "loss_cls", "loss_box"}`` (see the module docstring).

    ``outputs``: the dense detector's dict; ``targets``: B dicts {"boxes": float32 [M, 4] xyxy input pixels,
    "labels": int64 [M] in 0..C-1}.
    """

    def __init__(self, cfg: LossConfig | None = None, matcher: MatcherConfig | None = None) -> None:
        self.cfg = cfg or LossConfig(cls_loss="qfl", box_loss="giou", assigner="atss")
        if self.cfg.cls_loss not in ("qfl", "sigmoid_focal"):
            raise ValueError(f"loss.cls_loss={self.cfg.cls_loss!r} is for arch ssd; arch dense takes qfl or "
                             "sigmoid_focal")
        if self.cfg.atss_topk < 1:
            raise ValueError(f"loss.atss_topk must be >= 1, got {self.cfg.atss_topk}")
        self.matcher = matcher or MatcherConfig()
        self.coder = BoxCoder(self.cfg.box_weights)

    def __repr__(self) -> str:
        return f"DenseLoss({self.cfg}, {self.matcher})"

    def __call__(self, outputs: Mapping[str, Tensor], targets: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        cls_logits, bbox_deltas, anchors = outputs["cls_logits"], outputs["bbox_deltas"], outputs["anchors"]
        batch, num_anchors, num_classes = cls_logits.shape
        if len(targets) != batch:
            raise ValueError(f"got {len(targets)} targets for a batch of {batch} images")
        gt_boxes, gt_labels, gt_valid = _pad_targets(targets, anchors.device)
        if bool(((gt_labels < 0) | (gt_labels >= num_classes))[gt_valid].any()):
            raise ValueError(f"target labels must be in 0..{num_classes - 1} (foreground classes)")
        with torch.no_grad():
            if self.cfg.assigner == "atss":
                counts = [int(c) for c in outputs["num_anchors_per_level"].tolist()]
                match = atss_assign(anchors.detach(), counts, gt_boxes, gt_valid, self.cfg.atss_topk)
            else:
                match = self.matcher.match(anchors.detach(), gt_boxes, gt_valid)
        matched = match.matched_idxs  # (B, A)
        positive = matched >= 0
        ignore = matched == IGNORE
        normalizer = positive.sum().clamp(min=1).to(torch.float32)

        # positives: (P,) rows of (B, A, ...) tensors
        batch_idx, anchor_idx = positive.nonzero(as_tuple=True)
        pos_gt_index = matched[batch_idx, anchor_idx]
        pos_gt = gt_boxes[batch_idx, pos_gt_index]  # (P, 4)
        pos_labels = gt_labels[batch_idx, pos_gt_index]  # (P,)
        pos_anchors = anchors[anchor_idx].float()
        pos_deltas = bbox_deltas[batch_idx, anchor_idx].float()
        pred_boxes = self.coder.decode(pos_deltas, pos_anchors)

        logits = cls_logits.float()
        target = torch.zeros_like(logits)  # (B, A, C)
        if self.cfg.cls_loss == "qfl":
            with torch.no_grad():
                quality = elementwise_iou(pred_boxes, pos_gt)  # the soft target: how good the predicted box is
            target[batch_idx, anchor_idx, pos_labels] = quality.to(target.dtype)
            per_element = quality_focal_loss(logits, target, self.cfg.qfl_beta)
        else:
            target[batch_idx, anchor_idx, pos_labels] = 1.0
            per_element = sigmoid_focal_loss(logits, target, self.cfg.focal_alpha, self.cfg.focal_gamma)
        per_anchor = per_element.sum(-1)  # (B, A)
        loss_cls = torch.where(ignore, torch.zeros_like(per_anchor), per_anchor).sum() / normalizer

        if self.cfg.box_loss == "smooth_l1":
            target_deltas = self.coder.encode(pos_gt, pos_anchors)
            loss_box = F.smooth_l1_loss(pos_deltas, target_deltas, reduction="sum", beta=self.cfg.smooth_l1_beta)
        elif self.cfg.box_loss == "diou":
            loss_box = (1.0 - elementwise_diou(pred_boxes, pos_gt)).sum()
        else:
            loss_box = (1.0 - elementwise_giou(pred_boxes, pos_gt)).sum()
        loss_box = loss_box / normalizer
        loss = self.cfg.cls_weight * loss_cls + self.cfg.box_weight * loss_box
        return {"loss": loss, "loss_cls": loss_cls, "loss_box": loss_box}

