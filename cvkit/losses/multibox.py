"""The SSD multibox loss: anchor matching, classification (CE + hard-negative mining, or focal), box loss.

Glossary: B batch, A anchors, M ground truths per image (padded), C foreground classes, P positive
anchors in the batch. Boxes are xyxy pixels of the input tensor. Logit 0 is background (see
``cvkit.models.detector``): an anchor matched to a ground truth of label ``l`` has class target ``l + 1``.

Per batch, with ``N = max(1, P)``::

    matching    cvkit.ops.match_anchors on the padded batch (one call, no loop over images)
    loss_cls    ce:    (sum of CE over positives + sum of CE over hard negatives) / N, where each image
                       keeps its ``floor(neg_pos_ratio * P_image)`` negatives of highest CE
                       (cvkit.ops.hard_negative_mining; an image without ground truth adds nothing)
                focal: sum over positives and negatives of alpha_t * (1 - p_t)^gamma * CE / N
                       (softmax focal loss; alpha for positives, 1 - alpha for negatives)
    loss_box    smooth_l1: sum over positives and the 4 coordinates of smooth_l1(deltas - encode(gt, anchor)) / N
                giou:      sum over positives of (1 - GIoU(decode(deltas, anchor), gt)) / N (diou: DIoU)
    loss        cls_weight * loss_cls + box_weight * loss_box

Anchors in the matcher's IGNORE band are neither positives nor negatives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from cvkit.losses.config import LossConfig
from cvkit.ops.assign import IGNORE, MatcherConfig, hard_negative_mining
from cvkit.ops.coder import BoxCoder

__all__ = ["MultiBoxLoss", "MatchedTargets", "build_targets", "elementwise_giou", "elementwise_diou", "elementwise_iou"]


class MatchedTargets(NamedTuple):
    """Per-anchor targets of a batch (see :func:`build_targets`)."""

    labels: Tensor  # int64 (B, A): class target, 0 = background (also for ignored anchors)
    positive: Tensor  # bool (B, A)
    ignore: Tensor  # bool (B, A)
    matched_boxes: Tensor  # float (B, A, 4): the matched ground truth's box (meaningful on positives)


def _pad_targets(targets: Sequence[Mapping[str, Tensor]], device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """``gt_boxes (B, M, 4)``, ``gt_labels (B, M)``, ``gt_valid (B, M)`` with ``M >= 1`` (padding rows invalid)."""
    counts = [int(t["boxes"].shape[0]) for t in targets]
    num = max(counts + [1])
    gt_boxes = torch.zeros((len(targets), num, 4), dtype=torch.float32, device=device)
    gt_labels = torch.zeros((len(targets), num), dtype=torch.int64, device=device)
    for i, (t, n) in enumerate(zip(targets, counts)):
        if n:
            gt_boxes[i, :n] = t["boxes"].to(device=device, dtype=torch.float32).reshape(n, 4)
            gt_labels[i, :n] = t["labels"].to(device=device, dtype=torch.int64).reshape(n)
    gt_valid = torch.arange(num, device=device)[None, :] < torch.tensor(counts, device=device)[:, None]
    return gt_boxes, gt_labels, gt_valid


def build_targets(
    anchors: Tensor, targets: Sequence[Mapping[str, Tensor]], matcher: MatcherConfig, num_classes: int | None = None
) -> MatchedTargets:
    """Match ``anchors`` (A, 4) to every image's ground truth in one call and gather the targets.

    ``targets``: B dicts with "boxes" float [M_i, 4] xyxy and "labels" int64 [M_i] in ``0..C-1``.
    Invariants: ``labels[b, a] == gt_labels[b, m] + 1`` where anchor ``a`` is matched to ``m``, else 0;
    ``positive == labels > 0``.
    """
    gt_boxes, gt_labels, gt_valid = _pad_targets(targets, anchors.device)
    if num_classes is not None and bool(((gt_labels < 0) | (gt_labels >= num_classes))[gt_valid].any()):
        raise ValueError(f"target labels must be in 0..{num_classes - 1} (foreground classes)")
    match = matcher.match(anchors, gt_boxes, gt_valid)
    matched = match.matched_idxs  # (B, A): m, BACKGROUND or IGNORE
    positive = matched >= 0
    safe = matched.clamp(min=0)
    labels = torch.where(positive, torch.gather(gt_labels, 1, safe) + 1, torch.zeros_like(safe))
    boxes = torch.gather(gt_boxes, 1, safe[..., None].expand(-1, -1, 4))  # (B, A, 4)
    return MatchedTargets(labels, positive, matched == IGNORE, boxes)


def elementwise_giou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """GIoU of matching rows: xyxy ``boxes1`` and ``boxes2`` (N, 4) -> (N,) in [-1, 1].

    ``giou = iou - (hull - union) / hull`` with ``hull`` the area of the smallest enclosing box; ``eps`` in both
    denominators (torchvision's ``generalized_box_iou_loss`` formula, ``1 - giou``), so zero-area boxes give
    finite values and gradients. float16 and integer boxes are computed in float32 (int64: float64), as
    ``cvkit.ops.box_iou`` computes them (float16 areas overflow past 255 x 255).
    """
    boxes1, boxes2 = _giou_dtype(boxes1), _giou_dtype(boxes2)
    inter, union = _rows_inter_union(boxes1, boxes2)
    iou = inter / (union + eps)
    hull_wh = (torch.maximum(boxes1[:, 2:], boxes2[:, 2:]) - torch.minimum(boxes1[:, :2], boxes2[:, :2])).clamp(min=0)
    hull = hull_wh.prod(dim=1)
    return iou - (hull - union) / (hull + eps)


def elementwise_diou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """DIoU of matching rows: ``iou - d^2 / c^2`` (centre distance over the enclosing box's diagonal), (N,);
    float16 and integer boxes are computed in float32 (int64 in float64), as :func:`elementwise_giou`."""
    boxes1, boxes2 = _giou_dtype(boxes1), _giou_dtype(boxes2)
    inter, union = _rows_inter_union(boxes1, boxes2)
    iou = inter / (union + eps)
    hull = (torch.maximum(boxes1[:, 2:], boxes2[:, 2:]) - torch.minimum(boxes1[:, :2], boxes2[:, :2])).clamp(min=0)
    diag = (hull**2).sum(dim=1) + eps
    centre = ((boxes1[:, :2] + boxes1[:, 2:]) - (boxes2[:, :2] + boxes2[:, 2:])) / 2
    return iou - (centre**2).sum(dim=1) / diag


def elementwise_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of matching rows (N,), 0 where the union is empty; computed as :func:`elementwise_giou`."""
    inter, union = _rows_inter_union(_giou_dtype(boxes1), _giou_dtype(boxes2))
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))


def _rows_inter_union(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """Intersection and union areas of matching rows (N,) of xyxy boxes (negative sizes count as 0)."""
    area1 = (boxes1[:, 2] - boxes1[:, 0]).clamp(min=0) * (boxes1[:, 3] - boxes1[:, 1]).clamp(min=0)
    area2 = (boxes2[:, 2] - boxes2[:, 0]).clamp(min=0) * (boxes2[:, 3] - boxes2[:, 1]).clamp(min=0)
    lt = torch.maximum(boxes1[:, :2], boxes2[:, :2])
    rb = torch.minimum(boxes1[:, 2:], boxes2[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    return inter, area1 + area2 - inter


def _giou_dtype(boxes: Tensor) -> Tensor:
    if boxes.dtype in (torch.float32, torch.float64):
        return boxes
    return boxes.to(torch.float64 if boxes.dtype == torch.int64 else torch.float32)


class MultiBoxLoss:
    """``criterion(outputs, targets) -> {"loss", "loss_cls", "loss_box"}`` (see the module docstring).

    ``outputs``: the model's dict ("cls_logits" (B, A, C + 1), "bbox_deltas" (B, A, 4), "anchors" (A, 4)).
    ``targets``: B dicts {"boxes": float32 [M, 4] xyxy input pixels, "labels": int64 [M] in 0..C-1}.
    All three are scalar tensors; "loss" is the one to backpropagate.
    """

    def __init__(self, cfg: LossConfig | None = None, matcher: MatcherConfig | None = None) -> None:
        self.cfg = cfg or LossConfig()
        self.matcher = matcher or MatcherConfig()
        self.coder = BoxCoder(self.cfg.box_weights)
        if self.cfg.cls_loss not in ("ce", "focal"):
            raise ValueError(f"loss.cls_loss={self.cfg.cls_loss!r} is for arch dense; arch ssd takes ce or focal")
        if self.cfg.neg_pos_ratio < 0:
            raise ValueError(f"loss.neg_pos_ratio must be >= 0, got {self.cfg.neg_pos_ratio}")

    def __repr__(self) -> str:
        return f"MultiBoxLoss({self.cfg}, {self.matcher})"

    def __call__(self, outputs: Mapping[str, Tensor], targets: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        cls_logits = outputs["cls_logits"]
        bbox_deltas = outputs["bbox_deltas"]
        anchors = outputs["anchors"]
        batch, num_anchors, num_logits = cls_logits.shape
        if len(targets) != batch:
            raise ValueError(f"got {len(targets)} targets for a batch of {batch} images")
        if anchors.shape[0] != num_anchors:
            raise ValueError(f"outputs have {num_anchors} anchors but 'anchors' holds {anchors.shape[0]}")
        with torch.no_grad():
            matched = build_targets(anchors.detach(), targets, self.matcher, num_logits - 1)
        positive = matched.positive
        num_pos = positive.sum()
        normalizer = num_pos.clamp(min=1).to(torch.float32)

        # (B, A, C + 1) -> (B * A, C + 1) -> per-anchor CE (B, A)
        ce = F.cross_entropy(
            cls_logits.reshape(-1, num_logits).float(), matched.labels.reshape(-1), reduction="none"
        ).reshape(batch, num_anchors)
        if self.cfg.cls_loss == "ce":
            negative = hard_negative_mining(ce, positive, self.cfg.neg_pos_ratio, ignore_mask=matched.ignore)
            loss_cls = torch.where(positive | negative, ce, torch.zeros_like(ce)).sum() / normalizer
        else:  # focal, over every anchor that is not ignored
            p_t = torch.exp(-ce)
            alpha_t = torch.where(positive, self.cfg.focal_alpha, 1.0 - self.cfg.focal_alpha)
            focal = alpha_t * (1.0 - p_t).pow(self.cfg.focal_gamma) * ce
            loss_cls = torch.where(matched.ignore, torch.zeros_like(focal), focal).sum() / normalizer

        # positives only: (B, A, 4)[positive] -> (P, 4); anchors (A, 4) indexed by the positive's anchor
        anchor_idx = positive.nonzero()[:, 1]
        pos_anchors = anchors[anchor_idx].to(bbox_deltas.dtype)
        pos_deltas = bbox_deltas[positive]
        pos_gt = matched.matched_boxes[positive]
        if self.cfg.box_loss == "smooth_l1":
            target_deltas = self.coder.encode(pos_gt, pos_anchors)
            loss_box = F.smooth_l1_loss(
                pos_deltas.float(), target_deltas.float(), reduction="sum", beta=self.cfg.smooth_l1_beta
            )
        else:
            pred_boxes = self.coder.decode(pos_deltas.float(), pos_anchors.float())
            overlap = elementwise_diou if self.cfg.box_loss == "diou" else elementwise_giou
            loss_box = (1.0 - overlap(pred_boxes, pos_gt.float())).sum()
        loss_box = loss_box / normalizer
        loss = self.cfg.cls_weight * loss_cls + self.cfg.box_weight * loss_box
        return {"loss": loss, "loss_cls": loss_cls, "loss_box": loss_box}
