"""The detection confusion matrix: which class each ground-truth box was detected as, with background.

For ``C`` classes the matrix is ``(C + 1, C + 1)`` int64; index ``C`` is background::

    confusion[t, p]   t < C, p < C: a ground truth of class t matched by a detection of class p
    confusion[C, p]   a detection of class p that matched no ground truth (a false positive)
    confusion[t, C]   a ground truth of class t that no detection matched (missed)
    confusion[C, C]   always 0

Matching, per image (:func:`match_detections`): only detections with ``score >= score_thresh`` take part;
they are visited from the highest score down (ties: the earlier one first), and each takes the unmatched
ground truth with the highest IoU if that IoU is ``>= iou_thresh`` (ties: the lower index), whatever the
two classes are, so a box found with the wrong class shows up off the diagonal. Every ground truth is matched
at most once, so ``confusion[t].sum() == number of class-t ground truths`` and ``confusion[:, p].sum() == number of kept
class-p detections``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cvkit._arrays import as_numpy as _numpy

__all__ = ["match_detections", "DetectionConfusion", "UNMATCHED"]

UNMATCHED = -1  # match_detections' entry for a detection that matched no ground truth


def _iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """IoU of xyxy ``boxes1 [N, 4]`` and ``boxes2 [M, 4]`` -> ``[N, M]`` float64 (0 where a union is 0)."""
    area1 = np.clip(boxes1[:, 2] - boxes1[:, 0], 0, None) * np.clip(boxes1[:, 3] - boxes1[:, 1], 0, None)
    area2 = np.clip(boxes2[:, 2] - boxes2[:, 0], 0, None) * np.clip(boxes2[:, 3] - boxes2[:, 1], 0, None)
    lt = np.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = np.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    union = area1[:, None] + area2[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_detections(
    gt_boxes: Any, pred_boxes: Any, pred_scores: Any, iou_thresh: float = 0.5, score_thresh: float = 0.25
) -> np.ndarray:
    """Greedy matching of one image's detections to its ground truths (see the module docstring).

    ``gt_boxes [M, 4]``, ``pred_boxes [N, 4]`` xyxy in the same pixels, ``pred_scores [N]``. Returns int64
    ``[N]``: the index of the ground truth each detection matched, or :data:`UNMATCHED` (also for every
    detection below ``score_thresh``).
    """
    gt = _numpy(gt_boxes, np.float64).reshape(-1, 4)
    boxes = _numpy(pred_boxes, np.float64).reshape(-1, 4)
    scores = _numpy(pred_scores, np.float64).reshape(-1)
    matched = np.full(len(boxes), UNMATCHED, np.int64)
    if not len(gt) or not len(boxes):
        return matched
    iou = _iou(boxes, gt)
    taken = np.zeros(len(gt), bool)
    for i in np.argsort(-scores, kind="stable"):
        if scores[i] < score_thresh:
            break
        candidates = np.where(taken, -1.0, iou[i])
        j = int(np.argmax(candidates))  # the first of equal IoUs
        if candidates[j] >= iou_thresh:
            matched[i], taken[j] = j, True
    return matched


class DetectionConfusion:
    """Accumulate the ``(C + 1, C + 1)`` detection confusion matrix over images (see the module docstring)."""

    def __init__(self, num_classes: int, iou_thresh: float = 0.5, score_thresh: float = 0.25):
        self.num_classes = int(num_classes)
        self.iou_thresh = float(iou_thresh)
        self.score_thresh = float(score_thresh)
        self.matrix = np.zeros((self.num_classes + 1, self.num_classes + 1), np.int64)

    def update(self, gt_boxes: Any, gt_labels: Any, pred_boxes: Any, pred_scores: Any, pred_labels: Any) -> None:
        """Add one image: ``gt_labels [M]`` and ``pred_labels [N]`` in ``0..C-1``, boxes and scores as in
        :func:`match_detections`."""
        background = self.num_classes
        gt_labels = _numpy(gt_labels, np.int64).reshape(-1)
        pred_labels = _numpy(pred_labels, np.int64).reshape(-1)
        scores = _numpy(pred_scores, np.float64).reshape(-1)
        matched = match_detections(gt_boxes, pred_boxes, scores, self.iou_thresh, self.score_thresh)
        kept = scores >= self.score_thresh
        hit = matched != UNMATCHED
        np.add.at(self.matrix, (gt_labels[matched[hit]], pred_labels[hit]), 1)
        np.add.at(self.matrix, (background, pred_labels[kept & ~hit]), 1)
        missed = np.ones(len(gt_labels), bool)
        missed[matched[hit]] = False
        np.add.at(self.matrix, (gt_labels[missed], background), 1)

    def title(self) -> str:
        """What the matrix counts, for a picture's title."""
        return (f"detection confusion matrix: IoU >= {self.iou_thresh:g}, score >= {self.score_thresh:g}\n"
                f"{int(self.matrix[:, :-1].sum())} detections, {int(self.matrix[:-1].sum())} ground truths")
