"""Target assignment: batched anchor matching, hard-negative mining, and the d2l book's assignment.

Glossary: B batch, A anchors, M ground truths per image (padded), C foreground classes. Boxes are xyxy
in one unit (cvkit: absolute pixels).

**Sentinels** (the values of torchvision's ``Matcher``)::

    BACKGROUND = -1   # best IoU below neg_thresh: a negative
    IGNORE     = -2   # best IoU in [neg_thresh, pos_thresh): neither positive nor negative

A matched anchor holds the index ``m`` of its ground truth in the padded ``[B, M]`` layout.

**Matching rule** (``match_anchors``), per image, over the valid ground truths only:

1. every anchor takes the ground truth of highest IoU (ties: the lowest index ``m``);
2. ``iou >= pos_thresh``: positive; ``neg_thresh <= iou < pos_thresh``: IGNORE; below: BACKGROUND;
3. low-quality matches, ``low_quality=``

   - ``"ssd"`` (torchvision's ``SSDMatcher``): every ground truth takes its best anchor (ties: the
     lowest anchor index) whatever the IoU; when two ground truths share a best anchor the later one
     (higher ``m``) keeps it. With ``"ssd"`` every ground truth that does not lose its anchor this way
     has at least one positive.
   - ``"rcnn"`` (torchvision's ``Matcher(allow_low_quality_matches=True)``): every anchor tied at a
     ground truth's best IoU becomes positive, matched to *its own* best ground truth.
   - ``"none"``: no extra matches.

An image without valid ground truth has every anchor BACKGROUND. Invalid ground truths (``gt_valid`` is
False, or a coordinate is not finite) are ignored as if absent. IoU is ``box_iou``'s (0 where the union is
not positive; torchvision gives NaN there).

Kernels: CPU tensors go through a numba kernel that never builds the ``[B, A, M]`` IoU table (memory
O(A + M) per image; see ``cvkit.ops._kernels.cpu_assign``); other devices use batched torch ops
(``[B, M, A]`` IoU table, no per-image Python loop). Both give the same results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor

__all__ = [
    "BACKGROUND",
    "IGNORE",
    "AnchorMatch",
    "MatcherConfig",
    "match_anchors",
    "pad_gt_boxes",
    "hard_negative_mining",
    "assign_anchor_to_bbox",
    "multibox_target",
]

#: matched_idxs value of a negative anchor (best IoU below ``neg_thresh``).
BACKGROUND: int = -1
#: matched_idxs value of an anchor in the ignore band ``[neg_thresh, pos_thresh)``.
IGNORE: int = -2

_MODES = {"none": 0, "ssd": 1, "rcnn": 2}


class AnchorMatch(NamedTuple):
    """The result of :func:`match_anchors`.

    - ``matched_idxs``: int64 ``[B, A]``, ground-truth index ``m`` or BACKGROUND / IGNORE.
    - ``matched_iou``: ``[B, A]``, IoU with the matched ground truth for positives, else the best IoU over
      the valid ground truths (0 in an image without any).
    - ``gt_best_iou``: ``[B, M]``, each ground truth's best IoU over all anchors (0 for invalid ones).
    - ``gt_best_anchor``: int64 ``[B, M]``, the anchor reaching it (ties: lowest index; -1 for invalid
      ground truths).
    """

    matched_idxs: Tensor
    matched_iou: Tensor
    gt_best_iou: Tensor
    gt_best_anchor: Tensor


def _check_match_inputs(anchors: Tensor, gt_boxes: Tensor, gt_valid: Tensor | None) -> Tensor:
    if not isinstance(anchors, Tensor) or anchors.dim() != 2 or anchors.shape[-1] != 4:
        raise ValueError(f"anchors must be a tensor of shape [A, 4], got {getattr(anchors, 'shape', anchors)}")
    if not isinstance(gt_boxes, Tensor) or gt_boxes.dim() != 3 or gt_boxes.shape[-1] != 4:
        raise ValueError(
            f"gt_boxes must have shape [B, M, 4] (pad with pad_gt_boxes), got {getattr(gt_boxes, 'shape', gt_boxes)}"
        )
    if anchors.device != gt_boxes.device:
        raise ValueError(f"anchors are on {anchors.device} but gt_boxes on {gt_boxes.device}")
    if gt_valid is None:
        return torch.ones(gt_boxes.shape[:2], dtype=torch.bool, device=gt_boxes.device)
    if gt_valid.shape != gt_boxes.shape[:2]:
        raise ValueError(f"gt_valid must have shape {tuple(gt_boxes.shape[:2])}, got {tuple(gt_valid.shape)}")
    return gt_valid.to(device=gt_boxes.device, dtype=torch.bool)


def match_anchors(
    anchors: Tensor,
    gt_boxes: Tensor,
    gt_valid: Tensor | None = None,
    *,
    pos_thresh: float = 0.5,
    neg_thresh: float | None = None,
    low_quality: str = "ssd",
    backend: str = "auto",
) -> AnchorMatch:
    """Match anchors to padded ground truth for a whole batch (no Python loop over images).

    Args:
        anchors: ``[A, 4]`` xyxy anchors shared by the batch.
        gt_boxes: ``[B, M, 4]`` xyxy ground truth, padded (see :func:`pad_gt_boxes`).
        gt_valid: ``[B, M]`` bool, False for padding rows; None: all rows are valid.
        pos_thresh: ``iou >= pos_thresh`` is positive.
        neg_thresh: ``iou < neg_thresh`` is BACKGROUND, the band between is IGNORE; None: ``pos_thresh``.
        low_quality: "ssd", "rcnn" or "none" (see the module docstring).
        backend: "auto" (numba on CPU, torch elsewhere), "numba" or "torch".

    Returns:
        :class:`AnchorMatch`. ``matched_idxs`` equals torchvision's ``SSDMatcher(t)`` (``low_quality="ssd"``,
        ``neg_thresh = pos_thresh = t``) or ``Matcher(pos, neg, allow_low_quality_matches)`` per image, on
        the valid ground truths and mapped back to padded indices. float64 inputs compute in float64,
        others in float32 (thresholds are rounded to that precision, as torch's comparisons do).
    """
    gt_valid = _check_match_inputs(anchors, gt_boxes, gt_valid)
    neg_thresh = pos_thresh if neg_thresh is None else neg_thresh
    if neg_thresh > pos_thresh:
        raise ValueError(f"neg_thresh ({neg_thresh}) must be <= pos_thresh ({pos_thresh})")
    if low_quality not in _MODES:
        raise ValueError(f"low_quality must be one of {list(_MODES)}, got {low_quality!r}")
    if backend not in ("auto", "numba", "torch"):
        raise ValueError(f"backend must be 'auto', 'numba' or 'torch', got {backend!r}")
    if backend == "numba" and anchors.device.type != "cpu":
        raise ValueError(f"backend='numba' needs CPU tensors, got {anchors.device}")
    if backend == "numba" or (backend == "auto" and anchors.device.type == "cpu"):
        from cvkit.ops._kernels.cpu_assign import match_cpu

        return AnchorMatch(*match_cpu(anchors, gt_boxes, gt_valid, pos_thresh, neg_thresh, _MODES[low_quality]))
    return _match_torch(anchors, gt_boxes, gt_valid, pos_thresh, neg_thresh, low_quality)


def _match_torch(
    anchors: Tensor,
    gt_boxes: Tensor,
    gt_valid: Tensor,
    pos_thresh: float,
    neg_thresh: float,
    low_quality: str,
) -> AnchorMatch:
    from cvkit.ops.boxes import box_iou

    work = torch.float64 if torch.promote_types(anchors.dtype, gt_boxes.dtype) == torch.float64 else torch.float32
    anchors = anchors.to(work)
    gt_boxes = gt_boxes.to(work)
    batch, num_gt = gt_boxes.shape[:2]
    num_anchors = anchors.shape[0]
    device = anchors.device
    usable = gt_valid & torch.isfinite(gt_boxes).all(dim=-1)  # [B, M]
    has_gt = usable.any(dim=1, keepdim=True)  # [B, 1]
    if num_anchors == 0 or num_gt == 0:
        return AnchorMatch(
            torch.full((batch, num_anchors), BACKGROUND, dtype=torch.long, device=device),
            torch.zeros((batch, num_anchors), dtype=work, device=device),
            torch.zeros((batch, num_gt), dtype=work, device=device),
            torch.full((batch, num_gt), -1, dtype=torch.long, device=device),
        )
    safe_gt = torch.where(usable[..., None], gt_boxes, torch.zeros_like(gt_boxes))
    iou = box_iou(safe_gt, anchors)  # [B, M, A]
    iou = torch.where(usable[..., None], iou, torch.full_like(iou, -1.0))
    best_iou, best_gt = iou.max(dim=1)  # [B, A]; ties: lowest m
    matched = torch.where(
        best_iou < neg_thresh,
        torch.full_like(best_gt, BACKGROUND),
        torch.where(best_iou < pos_thresh, torch.full_like(best_gt, IGNORE), best_gt),
    )
    matched = torch.where(has_gt, matched, torch.full_like(matched, BACKGROUND))
    matched_iou = best_iou.clamp(min=0)
    gt_best_iou, gt_best_anchor = iou.max(dim=2)  # [B, M]; ties: lowest anchor
    gt_best_iou = torch.where(usable, gt_best_iou, torch.zeros_like(gt_best_iou))
    gt_best_anchor = torch.where(usable, gt_best_anchor, torch.full_like(gt_best_anchor, -1))

    if low_quality == "ssd":
        # each ground truth claims its best anchor; "amax" lets the later ground truth win a shared one
        src = torch.arange(num_gt, device=device).expand(batch, -1)
        src = torch.where(usable, src, torch.full_like(src, -1))
        forced = torch.full((batch, num_anchors), -1, dtype=torch.long, device=device)
        forced.scatter_reduce_(1, gt_best_anchor.clamp(min=0), src, reduce="amax")
        is_forced = forced >= 0
        forced_iou = torch.gather(iou, 1, forced.clamp(min=0)[:, None, :]).squeeze(1)
        matched = torch.where(is_forced, forced, matched)
        matched_iou = torch.where(is_forced, forced_iou, matched_iou)
    elif low_quality == "rcnn":
        ties = ((iou == gt_best_iou[..., None]) & usable[..., None]).any(dim=1)  # [B, A]
        matched = torch.where(ties & has_gt, best_gt, matched)
    return AnchorMatch(matched, matched_iou, gt_best_iou, gt_best_anchor)


@dataclass(frozen=True)
class MatcherConfig:
    """The ``anchors.matcher`` config section: the arguments of :func:`match_anchors`."""

    pos_thresh: float = 0.5  # IoU >= pos_thresh: positive
    neg_thresh: float | None = None  # IoU < neg_thresh: background; between: ignored. null: = pos_thresh
    low_quality: Literal["ssd", "rcnn", "none"] = "ssd"  # extra matches for poorly covered ground truth

    def match(self, anchors: Tensor, gt_boxes: Tensor, gt_valid: Tensor | None = None) -> AnchorMatch:
        return match_anchors(
            anchors,
            gt_boxes,
            gt_valid,
            pos_thresh=self.pos_thresh,
            neg_thresh=self.neg_thresh,
            low_quality=self.low_quality,
        )


def pad_gt_boxes(boxes: Sequence[Tensor], min_size: int = 0) -> tuple[Tensor, Tensor]:
    """Stack per-image ``[M_i, 4]`` boxes into ``gt_boxes [B, M, 4]`` and ``gt_valid [B, M]`` bool.

    ``M = max(M_i, min_size)``; padding rows are zeros with ``gt_valid`` False.
    """
    if not len(boxes):
        raise ValueError("pad_gt_boxes needs at least one image")
    num = max([int(b.shape[0]) for b in boxes] + [int(min_size)])
    first = boxes[0]
    dtype = first.dtype if first.is_floating_point() else torch.float32
    out = torch.zeros((len(boxes), num, 4), dtype=dtype, device=first.device)
    valid = torch.zeros((len(boxes), num), dtype=torch.bool, device=first.device)
    for i, b in enumerate(boxes):
        if b.dim() != 2 or b.shape[-1] != 4:
            raise ValueError(f"boxes[{i}] must have shape [M, 4], got {tuple(b.shape)}")
        out[i, : b.shape[0]] = b
        valid[i, : b.shape[0]] = True
    return out, valid


def hard_negative_mining(
    cls_loss: Tensor,
    positive_mask: Tensor,
    neg_pos_ratio: float = 3.0,
    *,
    ignore_mask: Tensor | None = None,
    min_negatives: int = 0,
) -> Tensor:
    """Keep, per image, the negatives of highest classification loss: ``neg_pos_ratio`` per positive.

    Args:
        cls_loss: ``[B, A]`` per-anchor classification loss (no gradient is taken through the choice).
        positive_mask: ``[B, A]`` bool, the positive anchors.
        neg_pos_ratio: negatives per positive (SSD: 3).
        ignore_mask: ``[B, A]`` bool, anchors that are neither positive nor negative (IGNORE).
        min_negatives: at least this many negatives per image (0, as in SSD: an image without positives
            contributes no negatives).

    Returns:
        bool ``[B, A]`` negative mask: ``min(max(floor(ratio * num_pos), min_negatives), num_candidates)``
        candidates per image (candidates: neither positive nor ignored), by decreasing loss, equal losses
        by increasing anchor index. SSD's loss uses ``positive_mask | negative_mask``.
    """
    if cls_loss.dim() != 2 or positive_mask.shape != cls_loss.shape:
        raise ValueError(
            "cls_loss and positive_mask must both be [B, A], "
            f"got {tuple(cls_loss.shape)} and {tuple(positive_mask.shape)}"
        )
    if neg_pos_ratio < 0:
        raise ValueError(f"neg_pos_ratio must be >= 0, got {neg_pos_ratio}")
    positive_mask = positive_mask.to(torch.bool)
    excluded = positive_mask if ignore_mask is None else positive_mask | ignore_mask.to(torch.bool)
    num_pos = positive_mask.sum(dim=1, keepdim=True)
    num_neg = torch.floor(num_pos.to(torch.float64) * neg_pos_ratio).to(torch.long).clamp(min=int(min_negatives))
    loss = cls_loss.detach().masked_fill(excluded, float("-inf"))
    order = torch.sort(loss, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return (rank < num_neg) & ~excluded


# ---------------------------------------------------------------------------------------------
# The d2l book's API ("Dive into Deep Learning", chapter "Anchor Boxes")
# ---------------------------------------------------------------------------------------------


def _greedy_assign(anchors: Tensor, gt_boxes: Tensor, iou_threshold: float) -> Tensor:
    from cvkit.ops._kernels.cpu_assign import greedy_assign_cpu

    # other devices: the greedy pass is sequential, so it runs on the CPU and the result moves back
    return greedy_assign_cpu(anchors.cpu(), gt_boxes.cpu(), iou_threshold).to(anchors.device)


def assign_anchor_to_bbox(
    ground_truth: Tensor,
    anchors: Tensor,
    device: torch.device | str | None = None,
    iou_threshold: float = 0.5,
) -> Tensor:
    """The d2l book's ``assign_anchor_to_bbox``: int64 ``[A]`` ground-truth index per anchor, -1 for none.

    ``ground_truth`` ``[M, 4]`` and ``anchors`` ``[A, 4]`` are xyxy. With ``X = box_iou(anchors, gt)``:
    each anchor whose best IoU is ``>= iou_threshold`` takes that ground truth (ties: lowest index);
    then, M times, the largest remaining entry of ``X`` (ties: first in row-major order) assigns its
    ground truth to its anchor, and that row and column are discarded. (Once every anchor row is
    discarded, the book's table holds only -1 and each further step assigns ground truth 0 to anchor 0;
    that is kept.) The index is computed exactly, where the book divides in float.
    """
    if ground_truth.dim() != 2 or ground_truth.shape[-1] != 4:
        raise ValueError(f"ground_truth must have shape [M, 4], got {tuple(ground_truth.shape)}")
    if anchors.dim() != 2 or anchors.shape[-1] != 4:
        raise ValueError(f"anchors must have shape [A, 4], got {tuple(anchors.shape)}")
    out = _greedy_assign(anchors, ground_truth[None].to(anchors.device), iou_threshold)[0]
    return out.to(device if device is not None else anchors.device)


def multibox_target(anchors: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The d2l book's ``multibox_target``: offsets, mask and class labels for every anchor.

    Args:
        anchors: ``[1, A, 4]`` (or ``[A, 4]``) xyxy anchors.
        labels: ``[B, M, 5]`` rows ``(class, x1, y1, x2, y2)``; every row is a ground truth (the book has
            no padding rule).

    Returns:
        ``bbox_offset [B, A * 4]``: the book's offsets (``10 * dxy / wh``, ``5 * log(1e-6 + wh_gt / wh)``)
        of assigned anchors, zero (with the sign the book's multiplication by 0 gives) elsewhere; values
        equal the book's up to the last bit of ``log`` (torch's vectorized and scalar ``log`` may differ
        by one ulp, so even the book's own results depend on where a value sits in its tensor);
        ``bbox_mask [B, A * 4]``: 1.0 for assigned anchors, else 0.0;
        ``class_labels`` int64 ``[B, A]``: ``class + 1`` (truncated toward zero) for assigned anchors,
        0 (background) elsewhere. Assignment is :func:`assign_anchor_to_bbox` with threshold 0.5, run for
        the whole batch in one numba call.
    """
    from cvkit.ops.coder import d2l_encode

    anchors = anchors.reshape(-1, 4)
    if labels.dim() != 3 or labels.shape[-1] != 5:
        raise ValueError(f"labels must have shape [B, M, 5], got {tuple(labels.shape)}")
    batch, num_anchors = labels.shape[0], anchors.shape[0]
    labels = labels.to(anchors.device)
    anchor_map = _greedy_assign(anchors, labels[..., 1:], 0.5)  # [B, A]
    assigned = anchor_map >= 0
    # The book encodes every anchor against its assigned box (a zero box when unassigned) and multiplies by
    # the mask. An unassigned anchor's row is the same in every image, so it is computed once per anchor
    # (keeping the sign of the book's zeros); only assigned anchors are encoded per image.
    unassigned_rows = d2l_encode(anchors, torch.zeros_like(anchors, dtype=torch.float32)) * 0.0  # [A, 4]
    offsets = unassigned_rows.expand(batch, num_anchors, 4).clone()
    img_idx, anchor_idx = torch.nonzero(assigned, as_tuple=True)
    gt_rows = labels[img_idx, anchor_map[img_idx, anchor_idx]]  # [P, 5]
    offsets[img_idx, anchor_idx] = d2l_encode(anchors[anchor_idx], gt_rows[:, 1:].to(torch.float32))
    class_labels = torch.zeros((batch, num_anchors), dtype=torch.long, device=anchors.device)
    class_labels[img_idx, anchor_idx] = gt_rows[:, 0].long() + 1
    mask = assigned.to(torch.float32)[..., None].expand(-1, -1, 4)  # [B, A, 4]
    return offsets.reshape(batch, num_anchors * 4), mask.reshape(batch, num_anchors * 4), class_labels
