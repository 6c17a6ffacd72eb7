"""Batched torch implementations of NMS: the path for CUDA tensors, runnable (and tested) on CPU.

Nothing here loops over images or classes in Python. Greedy NMS over score-sorted candidates is solved
as a fixed point: with ``S[i, j] = (i < j) and IoU(i, j) > t``, the greedy keep vector is the unique
solution of ``keep[j] = valid[j] and not any_i(S[i, j] and keep[i])``; iterating that map from
``keep = valid`` settles in (longest suppression chain + 1) steps, each a batched tensor op. The loop
reads one flag back per step to stop; it never copies data to the host.

The overlap is computed with the same expression and operation order as the numba kernels and
torchvision's CPU kernel, so the three agree exactly on hard NMS.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

# Upper bound on elements of one [G, K, K] overlap block (bounds peak memory at ~4 bytes x this).
_BLOCK_ELEMS = 1 << 26
_CHUNK = 2048


def work_dtype(t: Tensor) -> torch.dtype:
    return t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32


def pairwise_overlap(b1: Tensor, b2: Tensor) -> Tensor:
    """``[..., P, 4] x [..., Q, 4] -> [..., P, Q]`` IoU as ``inter / (area1 + area2 - inter)`` (NaN for 0/0)."""
    area1 = (b1[..., 2] - b1[..., 0]) * (b1[..., 3] - b1[..., 1])
    area2 = (b2[..., 2] - b2[..., 0]) * (b2[..., 3] - b2[..., 1])
    w = torch.min(b1[..., :, None, 2], b2[..., None, :, 2]) - torch.max(b1[..., :, None, 0], b2[..., None, :, 0])
    h = torch.min(b1[..., :, None, 3], b2[..., None, :, 3]) - torch.max(b1[..., :, None, 1], b2[..., None, :, 1])
    inter = w.clamp(min=0) * h.clamp(min=0)
    return inter / (area1[..., :, None] + area2[..., None, :] - inter)


def greedy_fixed_point(suppress: Tensor, valid: Tensor) -> Tensor:
    """Solve greedy NMS given ``suppress [G, K, K]`` (strictly upper triangular) and ``valid [G, K]``."""
    keep = valid
    for _ in range(suppress.shape[-1] + 1):
        new = valid & ~(suppress & keep[:, :, None]).any(dim=1)
        if torch.equal(new, keep):
            break
        keep = new
    return keep


def threshold_for(dtype: torch.dtype, threshold: float) -> float:
    """The threshold that makes a comparison in ``dtype`` decide like one in float64.

    torch compares a float32 tensor with a Python float in float32, while torchvision's and cvkit's CPU
    kernels compare in float64. For float32 values ``x > t`` (float64) holds exactly when
    ``x > t32``, with ``t32`` the largest float32 not above ``t``.
    """
    if dtype == torch.float64:
        return threshold
    t32 = np.float32(threshold)
    if float(t32) > threshold:
        t32 = np.nextafter(t32, np.float32(-np.inf))
    return float(t32)


def _stable_desc_order(scores: Tensor) -> Tensor:
    return torch.sort(scores, dim=-1, descending=True, stable=True)[1]


def nms_torch(
    boxes: Tensor, scores: Tensor, idxs: Tensor | None, iou_threshold: float, use_triton: bool = False
) -> Tensor:
    """Greedy (per-class when ``idxs`` is given) NMS; kept indices by (score desc, index asc).

    ``use_triton``: run the suppression with the Triton kernels (``triton_nms``) after the same sort,
    falling back to the torch fixed point when a class is larger than ``triton_nms.MAX_SEGMENT``.
    """
    n = boxes.shape[0]
    device = boxes.device
    boxes = boxes.to(work_dtype(boxes))
    iou_threshold = threshold_for(boxes.dtype, iou_threshold)
    order = _stable_desc_order(scores.to(work_dtype(scores)))
    if idxs is None:
        by_class = order
        cls_sorted = torch.zeros(n, dtype=torch.int64, device=device)
    else:
        cls_of_order = idxs.to(torch.int64)[order]
        regroup = torch.sort(cls_of_order, stable=True)[1]  # class asc, score order kept inside a class
        by_class = order[regroup]
        cls_sorted = cls_of_order[regroup]
    sboxes = boxes[by_class]
    keep = None
    if use_triton:
        from cvkit.ops._kernels.triton_nms import nms_sorted

        keep = nms_sorted(sboxes, cls_sorted, iou_threshold)  # None: a class too large for the kernels
    if keep is None:
        keep = _fixed_point_keep(sboxes, cls_sorted, iou_threshold)
    kept_flag = torch.zeros(n, dtype=torch.bool, device=device)
    kept_flag[by_class[keep]] = True
    return order[kept_flag[order]]


def _fixed_point_keep(sboxes: Tensor, cls_sorted: Tensor, iou_threshold: float) -> Tensor:
    """Greedy keep flags of boxes sorted by (class, score desc), in chunks of ``_CHUNK`` candidates."""
    n = sboxes.shape[0]
    device = sboxes.device
    keep = torch.zeros(n, dtype=torch.bool, device=device)
    kept_boxes = sboxes[:0]
    kept_cls = cls_sorted[:0]
    tri = torch.ones(_CHUNK, _CHUNK, dtype=torch.bool, device=device).triu_(1)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        chunk = sboxes[start:stop]
        chunk_cls = cls_sorted[start:stop]
        valid = torch.ones(stop - start, dtype=torch.bool, device=device)
        if kept_boxes.shape[0] > 0:
            # Kept boxes are in class order, so those of the chunk's classes form a suffix.
            first = int(torch.searchsorted(kept_cls, chunk_cls[:1]).item())
            for kb_start in range(first, kept_boxes.shape[0], _CHUNK):
                kb = kept_boxes[kb_start : kb_start + _CHUNK]
                kc = kept_cls[kb_start : kb_start + _CHUNK]
                hit = (pairwise_overlap(kb, chunk) > iou_threshold) & (kc[:, None] == chunk_cls[None, :])
                valid &= ~hit.any(dim=0)
        m = stop - start
        same_class = chunk_cls[:, None] == chunk_cls[None, :]
        sup = (pairwise_overlap(chunk, chunk) > iou_threshold) & tri[:m, :m] & same_class
        chunk_keep = greedy_fixed_point(sup[None], valid[None])[0]
        keep[start:stop] = chunk_keep
        kept_boxes = torch.cat([kept_boxes, chunk[chunk_keep]])
        kept_cls = torch.cat([kept_cls, chunk_cls[chunk_keep]])
    return keep


def multiclass_nms_torch(
    boxes: Tensor,
    scores: Tensor,
    score_thresh: float,
    iou_thresh: float,
    pre_nms_topk: int,
    max_detections: int,
    class_agnostic: bool,
    soft_nms: str | None,
    sigma: float,
) -> tuple[Tensor, Tensor]:
    """Whole-batch multi-class NMS; see :func:`cvkit.ops.nms.multiclass_nms` for the contract."""
    num_images, num_anchors, num_classes = scores.shape
    device = scores.device
    dtype = work_dtype(boxes)
    boxes = boxes.to(dtype)
    scores = scores.to(work_dtype(scores))
    iou_thresh = threshold_for(dtype, iou_thresh)
    if class_agnostic:
        # One group per image over all (anchor, class) pairs, flat index = anchor * C + class.
        group_scores = scores.reshape(num_images, 1, num_anchors * num_classes)
        group_boxes = boxes.reshape(num_images, 1, num_anchors * num_classes, 4) if boxes.dim() == 4 else None
    else:
        group_scores = scores.transpose(1, 2)  # (B, N, C) -> (B, C, N)
        group_boxes = boxes.transpose(1, 2) if boxes.dim() == 4 else None  # (B, N, C, 4) -> (B, C, N, 4)
    num_groups = group_scores.shape[1]
    length = group_scores.shape[2]
    k = length if pre_nms_topk <= 0 else min(pre_nms_topk, length)

    passing = group_scores > score_thresh
    masked = torch.where(passing, group_scores, torch.full_like(group_scores, float("-inf")))
    order = _stable_desc_order(masked)[..., :k]  # (B, G, k)
    cand_scores = torch.gather(masked, 2, order)
    valid = cand_scores > score_thresh
    if group_boxes is not None:
        cand_boxes = torch.gather(group_boxes, 2, order[..., None].expand(-1, -1, -1, 4))
    else:
        anchor = order // num_classes if class_agnostic else order
        flat = anchor.reshape(num_images, -1)
        cand_boxes = torch.gather(boxes, 1, flat[..., None].expand(-1, -1, 4)).reshape(num_images, num_groups, k, 4)
    if class_agnostic:
        labels = order % num_classes
    else:
        labels = torch.arange(num_groups, device=device)[None, :, None].expand_as(order)

    g_boxes = cand_boxes.reshape(-1, k, 4)
    g_valid = valid.reshape(-1, k)
    g_scores = cand_scores.reshape(-1, k)
    total = g_boxes.shape[0]
    step = max(1, _BLOCK_ELEMS // max(1, k * k))
    out_scores = torch.full_like(g_scores, float("-inf"))
    out_pos = torch.zeros_like(order.reshape(-1, k))
    tri = torch.ones(k, k, dtype=torch.bool, device=device).triu_(1)
    for g0 in range(0, total, step):
        g1 = min(g0 + step, total)
        ovr = pairwise_overlap(g_boxes[g0:g1], g_boxes[g0:g1])
        if soft_nms is None:
            sup = (ovr > iou_thresh) & tri
            keep = greedy_fixed_point(sup, g_valid[g0:g1])
            out_scores[g0:g1] = torch.where(keep, g_scores[g0:g1], torch.full_like(g_scores[g0:g1], float("-inf")))
            out_pos[g0:g1] = torch.arange(k, device=device)
        else:
            s, p = _soft_nms_groups(ovr, g_scores[g0:g1], g_valid[g0:g1], score_thresh, iou_thresh, soft_nms, sigma)
            out_scores[g0:g1] = s
            out_pos[g0:g1] = p

    # Merge groups per image: sort by score desc; ties by (group, slot) thanks to the stable sort.
    merged_scores = out_scores.reshape(num_images, num_groups * k)
    group_offset = torch.arange(num_groups, device=device)[None, :, None] * k
    merged_pos = out_pos.reshape(num_images, num_groups, k) + group_offset
    merged_pos = merged_pos.reshape(num_images, num_groups * k)
    top = _stable_desc_order(merged_scores)[:, :max_detections]
    det_scores = torch.gather(merged_scores, 1, top)
    det_pos = torch.gather(merged_pos, 1, top)
    ok = det_scores > float("-inf")
    det_boxes = torch.gather(cand_boxes.reshape(num_images, -1, 4), 1, det_pos[..., None].expand(-1, -1, 4))
    det_labels = torch.gather(labels.reshape(num_images, -1), 1, det_pos)
    counts = ok.sum(dim=1)
    width = top.shape[1]
    dets = torch.zeros(num_images, max_detections, 6, dtype=dtype, device=device)
    dets[:, :width, :4] = torch.where(ok[..., None], det_boxes, torch.zeros_like(det_boxes))
    dets[:, :width, 4] = torch.where(ok, det_scores.to(dtype), torch.zeros_like(det_scores, dtype=dtype))
    dets[:, :, 5] = -1
    dets[:, :width, 5] = torch.where(ok, det_labels.to(dtype), torch.full_like(det_labels, -1, dtype=dtype))
    return dets, counts


def _soft_nms_groups(
    ovr: Tensor, scores: Tensor, valid: Tensor, score_thresh: float, iou_thresh: float, method: str, sigma: float
) -> tuple[Tensor, Tensor]:
    """Soft-NMS on groups ``[G, k]``: returns (score at selection or -inf, candidate slot) per step."""
    g, k = scores.shape
    neg_inf = torch.full_like(scores, float("-inf"))
    current = torch.where(valid, scores, neg_inf)
    alive = valid.clone()
    out_scores = torch.full_like(scores, float("-inf"))
    out_pos = torch.zeros(g, k, dtype=torch.int64, device=scores.device)
    rows = torch.arange(g, device=scores.device)
    for t in range(k):
        masked = torch.where(alive, current, neg_inf)
        best = masked.argmax(dim=1)  # first maximum: ties go to the earlier candidate
        best_score = masked[rows, best]
        has = best_score > float("-inf")
        out_scores[:, t] = best_score
        out_pos[:, t] = best
        alive[rows, best] = False
        iou = torch.nan_to_num(ovr[rows, best], nan=0.0)  # (G, k); 0/0 of degenerate boxes -> 0
        if method == "linear":
            weight = torch.where(iou > iou_thresh, 1 - iou, torch.ones_like(iou))
        else:
            weight = torch.exp(-(iou * iou) / sigma)
        # the product is rounded to the scores' dtype, as the numba kernel stores it (float64 boxes give a
        # float64 weight): a decayed score equal to another one must tie on both backends
        current = torch.where(has[:, None], (current * weight).to(current.dtype), current)
        alive &= current > score_thresh
    return out_scores, out_pos
