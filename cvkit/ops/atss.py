"""ATSS: adaptive training sample selection (Zhang et al., "Bridging the Gap Between Anchor-based and
Anchor-free Detection via Adaptive Training Sample Selection", CVPR 2020), batched with no loop over images.

Glossary: B batch, A anchors, M ground truths per image (padded), L levels, k candidates per level.

**Rule**, for every valid ground truth ``g`` of an image:

1. candidates: on every level, the ``k`` anchors whose centres are closest (L2) to ``g``'s centre (all of a
   level's anchors when it has fewer than ``k``; ties: the lower anchor index);
2. threshold: ``t_g = mean + std`` of the candidates' IoUs with ``g`` (the sample standard deviation,
   ``std(unbiased=True)``, as the reference implementation computes it);
3. positives of ``g``: candidates with ``IoU >= t_g`` whose centre lies strictly inside ``g``
   (``x1 < cx < x2`` and ``y1 < cy < y2``);
4. an anchor that is a positive of several ground truths takes the one of highest IoU (ties: lower ``m``).

Every other anchor is ``BACKGROUND`` (there is no ignore band). The result uses the sentinels and the
:class:`cvkit.ops.assign.AnchorMatch` layout of :func:`cvkit.ops.match_anchors`, so a loss can take either.
Invalid ground truths (``gt_valid`` False) take part in nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from cvkit.ops.assign import BACKGROUND, AnchorMatch
from cvkit.ops.boxes import box_iou

__all__ = ["atss_assign"]


def atss_assign(
    anchors: Tensor,
    num_anchors_per_level: Sequence[int],
    gt_boxes: Tensor,
    gt_valid: Tensor | None = None,
    topk: int = 9,
) -> AnchorMatch:
    """ATSS assignment of a padded batch (see the module docstring).

    Args:
        anchors: ``[A, 4]`` xyxy, level by level.
        num_anchors_per_level: anchors of each level, summing to ``A``.
        gt_boxes: ``[B, M, 4]`` xyxy.
        gt_valid: bool ``[B, M]`` (default: every row valid).
        topk: candidates per level and ground truth.

    Returns:
        :class:`cvkit.ops.assign.AnchorMatch`: ``matched_idxs`` int64 ``[B, A]`` (index ``m`` or BACKGROUND),
        ``matched_iou`` ``[B, A]`` (IoU with the matched ground truth, else the best IoU over valid ones),
        ``gt_best_iou`` / ``gt_best_anchor`` ``[B, M]`` (over all anchors; 0 / -1 for invalid rows).
    """
    if anchors.dim() != 2 or anchors.shape[-1] != 4:
        raise ValueError(f"anchors must be [A, 4], got {tuple(anchors.shape)}")
    if gt_boxes.dim() != 3 or gt_boxes.shape[-1] != 4:
        raise ValueError(f"gt_boxes must be [B, M, 4], got {tuple(gt_boxes.shape)}")
    counts = [int(c) for c in num_anchors_per_level]
    if sum(counts) != anchors.shape[0] or min(counts, default=1) < 0:
        raise ValueError(f"num_anchors_per_level {counts} must sum to the {anchors.shape[0]} anchors")
    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    batch, num_gt = gt_boxes.shape[:2]
    num_anchors = anchors.shape[0]
    device = anchors.device
    anchors = anchors.float()
    gt = gt_boxes.to(device=device, dtype=torch.float32)
    valid = torch.ones(batch, num_gt, dtype=torch.bool, device=device) if gt_valid is None else gt_valid.to(device)
    valid = valid & torch.isfinite(gt).all(-1)
    if num_gt == 0 or num_anchors == 0:
        return _empty(batch, num_gt, num_anchors, device)

    iou = box_iou(gt.reshape(-1, 4), anchors).reshape(batch, num_gt, num_anchors)  # (B, M, A)
    iou = iou.masked_fill(~valid[..., None], 0.0)
    anchor_c = (anchors[:, :2] + anchors[:, 2:]) / 2  # (A, 2)
    gt_c = (gt[..., :2] + gt[..., 2:]) / 2  # (B, M, 2)
    dist = torch.cdist(gt_c.reshape(-1, 2), anchor_c).reshape(batch, num_gt, num_anchors)  # (B, M, A)

    # 1. candidates: k nearest centres per level -> a (B, M, A) mask
    candidate = torch.zeros(batch, num_gt, num_anchors, dtype=torch.bool, device=device)
    start = 0
    for count in counts:
        if count:
            k = min(topk, count)
            # stable tie-break by index: topk of -dist on a level slice (ties are resolved by sort order)
            level = dist[..., start : start + count]
            idx = torch.sort(level, dim=-1, stable=True).indices[..., :k] + start
            candidate.scatter_(-1, idx, True)
        start += count

    # 2. adaptive threshold per ground truth: mean + unbiased std of the candidates' IoUs
    num_cand = candidate.sum(-1).clamp(min=1)  # (B, M)
    cand_iou = torch.where(candidate, iou, torch.zeros_like(iou))
    mean = cand_iou.sum(-1) / num_cand
    var = torch.where(candidate, (iou - mean[..., None]) ** 2, torch.zeros_like(iou)).sum(-1)
    std = torch.sqrt(var / (num_cand - 1).clamp(min=1))
    threshold = mean + std  # (B, M)

    # 3. positives: candidate, IoU >= threshold, centre strictly inside the ground truth
    inside = ((anchor_c[None, None, :, 0] > gt[..., 0, None]) & (anchor_c[None, None, :, 0] < gt[..., 2, None])
              & (anchor_c[None, None, :, 1] > gt[..., 1, None]) & (anchor_c[None, None, :, 1] < gt[..., 3, None]))
    positive = candidate & (iou >= threshold[..., None]) & inside & valid[..., None]  # (B, M, A)

    # 4. one ground truth per anchor: the highest IoU among its positives (ties: lower m)
    score = torch.where(positive, iou, torch.full_like(iou, -1.0))
    best_score, best_m = score.max(dim=1)  # (B, A); max returns the first maximal index
    matched = torch.where(best_score >= 0, best_m, torch.full_like(best_m, BACKGROUND))
    matched_iou = torch.where(matched >= 0, iou.gather(1, best_m[:, None]).squeeze(1), iou.max(dim=1).values)
    gt_best_iou, gt_best_anchor = iou.max(dim=-1)  # (B, M)
    gt_best_anchor = torch.where(valid, gt_best_anchor, torch.full_like(gt_best_anchor, -1))
    return AnchorMatch(matched, matched_iou, torch.where(valid, gt_best_iou, torch.zeros_like(gt_best_iou)),
                       gt_best_anchor)


def _empty(batch: int, num_gt: int, num_anchors: int, device: torch.device) -> AnchorMatch:
    return AnchorMatch(
        torch.full((batch, num_anchors), BACKGROUND, dtype=torch.int64, device=device),
        torch.zeros((batch, num_anchors), device=device),
        torch.zeros((batch, num_gt), device=device),
        torch.full((batch, num_gt), -1, dtype=torch.int64, device=device),
    )
