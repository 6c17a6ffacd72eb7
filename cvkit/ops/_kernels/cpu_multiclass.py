"""numba kernel for whole-batch multi-class NMS (detector postprocess) on CPU.

Per image, per class (or once per image when class-agnostic): candidates with ``score > score_thresh``,
the ``pre_nms_topk`` best by (score desc, index asc) found by partition instead of a full sort, greedy
(or soft) NMS on them, then a stable merge of all classes by score (ties: class, then rank). The result
is identical to :func:`cvkit.ops._kernels.torch_nms.multiclass_nms_torch` for hard NMS.
Images run in parallel only when there are several images, more than one thread is allowed, and the
batch is large enough for threads to pay.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from cvkit.ops._kernels import allowed_threads, run_threaded
from cvkit.ops._kernels.cpu_nms import _JIT, _desc_keys32, _desc_keys64, _radix_argsort, nms_sorted_segments

_PARALLEL_MIN_ELEMS = 1 << 16


@numba.njit(inline="always")
def _desc_keys(vals):
    if vals.itemsize == 8:
        return _desc_keys64(vals.astype(np.float64)).astype(np.uint64)
    return _desc_keys32(vals.astype(np.float32)).astype(np.uint64)


@numba.njit(**_JIT)
def _stable_desc(vals):
    """Stable argsort by decreasing value (ties keep their order)."""
    nbits = 64 if vals.itemsize == 8 else 32
    return _radix_argsort(_desc_keys(vals), nbits)


@numba.njit(**_JIT)
def _select_topk(vals, thr, k):
    """Positions of the best ``k`` values ``> thr`` by (value desc, position asc)."""
    n = vals.shape[0]
    cand = np.empty(n, dtype=np.int64)
    m = 0
    for i in range(n):
        if vals[i] > thr:
            cand[m] = i
            m += 1
    cand = cand[:m]
    sv = np.empty(m, dtype=vals.dtype)
    for j in range(m):
        sv[j] = vals[cand[j]]
    return _select_best(cand, sv, k)


@numba.njit(**_JIT)
def _bucket_by_class(scores, thr):
    """One pass over scores (N, C): the anchors with ``score > thr`` of every class, in anchor order.

    Returns (anchor index, score) arrays grouped by class and the group offsets ``starts[C + 1]``.
    """
    num_anchors, num_classes = scores.shape
    starts = np.zeros(num_classes + 1, dtype=np.int64)
    for n in range(num_anchors):
        for c in range(num_classes):
            if scores[n, c] > thr:
                starts[c + 1] += 1
    for c in range(num_classes):
        starts[c + 1] += starts[c]
    fill = starts[:num_classes].copy()
    idx = np.empty(starts[num_classes], dtype=np.int64)
    val = np.empty(starts[num_classes], dtype=scores.dtype)
    for n in range(num_anchors):
        for c in range(num_classes):
            v = scores[n, c]
            if v > thr:
                p = fill[c]
                idx[p] = n
                val[p] = v
                fill[c] = p + 1
    return idx, val, starts


@numba.njit(**_JIT)
def _select_best(cand, sv, k):
    """The best ``k`` of candidates ``cand`` (increasing positions) with scores ``sv``, by (score desc, position).

    Radix select on the order-preserving integer keys of the scores (2-3 histogram passes over the
    candidates, no full sort), then a stable sort of the k winners.
    """
    m = cand.shape[0]
    keys = _desc_keys(sv)  # ascending key = descending score
    if k <= 0 or m <= k:
        return cand[_radix_argsort(keys, 64)]
    nbits = 64 if sv.itemsize == 8 else 32
    chosen = np.empty(k, dtype=np.int64)  # positions into cand
    nchosen = 0
    active = np.arange(m)
    need = k
    counts = np.zeros(2048, dtype=np.int64)
    shift = nbits
    while need > 0:
        width = 11 if shift >= 11 else shift
        shift -= width
        mask = (1 << width) - 1
        counts[:] = 0
        for j in active:
            counts[(keys[j] >> shift) & mask] += 1
        below = 0
        pivot = 0
        for d in range(mask + 1):
            if below + counts[d] >= need:
                pivot = d
                break
            below += counts[d]
        rest = np.empty(counts[pivot], dtype=np.int64)
        nrest = 0
        for j in active:  # active stays in candidate (= position) order
            d = (keys[j] >> shift) & mask
            if d < pivot:
                chosen[nchosen] = j
                nchosen += 1
            elif d == pivot:
                rest[nrest] = j
                nrest += 1
        need -= below
        if nrest == need or shift == 0:
            for q in range(need):  # equal keys at the last level: lowest positions first
                chosen[nchosen] = rest[q]
                nchosen += 1
            need = 0
        else:
            active = rest
    # winners from earlier levels have strictly smaller keys; equal keys only share a level, in order
    order = _radix_argsort(keys[chosen], 64)
    return cand[chosen[order]]


@numba.njit(**_JIT)
def _soft_nms(x1, y1, x2, y2, scores, score_thresh, iou_thresh, gaussian, sigma, out_scores, out_pos):
    """Soft-NMS of score-sorted candidates; writes per step (score at selection, candidate slot)."""
    m = scores.shape[0]
    area = (x2 - x1) * (y2 - y1)
    cur = scores.copy()
    alive = np.ones(m, dtype=np.bool_)
    zero = np.zeros_like(scores[:1])[0]
    one = zero + np.ones_like(scores[:1])[0]
    for t in range(m):
        best = -1
        best_score = zero
        for j in range(m):
            if alive[j] and (best < 0 or cur[j] > best_score):
                best = j
                best_score = cur[j]
        if best < 0:
            return t
        out_scores[t] = best_score
        out_pos[t] = best
        alive[best] = False
        for j in range(m):
            if not alive[j]:
                continue
            w = min(x2[best], x2[j]) - max(x1[best], x1[j])
            h = min(y2[best], y2[j]) - max(y1[best], y1[j])
            w = w if w > zero else zero
            h = h if h > zero else zero
            inter = w * h
            iou = inter / (area[best] + area[j] - inter)
            if iou != iou:
                iou = zero
            if gaussian:
                cur[j] = cur[j] * np.exp(-(iou * iou) / sigma)
            elif iou > iou_thresh:
                cur[j] = cur[j] * (one - iou)
            alive[j] = cur[j] > score_thresh
    return m


@numba.njit(**_JIT)
def _image(boxes, scores, score_thresh, iou_thresh, topk, max_det, agnostic, soft, gaussian, sigma, out):
    """One image: boxes (N, Cb, 4) with Cb in {1, C}; scores (N, C); out (max_det, 6) pre-filled."""
    num_anchors, num_classes = scores.shape
    cb = boxes.shape[1]
    ngroups = 1 if agnostic else num_classes
    length = num_anchors * num_classes if agnostic else num_anchors
    k = length if topk <= 0 else min(topk, length)
    res_scores = np.empty(ngroups * k, dtype=scores.dtype)
    res_anchor = np.empty(ngroups * k, dtype=np.int64)
    res_class = np.empty(ngroups * k, dtype=np.int64)
    nres = 0
    if agnostic:
        flat = scores.reshape(-1)
    else:
        b_idx, b_val, b_starts = _bucket_by_class(scores, score_thresh)
    for g in range(ngroups):
        if agnostic:
            cand = _select_topk(flat, score_thresh, k)
            vals = flat
        else:
            s0, s1 = b_starts[g], b_starts[g + 1]
            order = _select_best(np.arange(s1 - s0), b_val[s0:s1], k)
            cand = b_idx[s0:s1][order]
            vals = scores[:, g]
        m = cand.shape[0]
        if m == 0:
            continue
        x1 = np.empty(m, dtype=boxes.dtype)
        y1 = np.empty(m, dtype=boxes.dtype)
        x2 = np.empty(m, dtype=boxes.dtype)
        y2 = np.empty(m, dtype=boxes.dtype)
        anchors = np.empty(m, dtype=np.int64)
        classes = np.empty(m, dtype=np.int64)
        cs = np.empty(m, dtype=scores.dtype)
        for j in range(m):
            if agnostic:
                a = cand[j] // num_classes
                c = cand[j] % num_classes
            else:
                a = cand[j]
                c = g
            anchors[j] = a
            classes[j] = c
            bc = c if cb > 1 else 0
            x1[j] = boxes[a, bc, 0]
            y1[j] = boxes[a, bc, 1]
            x2[j] = boxes[a, bc, 2]
            y2[j] = boxes[a, bc, 3]
            cs[j] = vals[cand[j]]
        if soft:
            sel_scores = np.empty(m, dtype=scores.dtype)
            sel_pos = np.empty(m, dtype=np.int64)
            cnt = _soft_nms(x1, y1, x2, y2, cs, score_thresh, iou_thresh, gaussian, sigma, sel_scores, sel_pos)
            for t in range(cnt):
                res_scores[nres] = sel_scores[t]
                res_anchor[nres] = anchors[sel_pos[t]]
                res_class[nres] = classes[sel_pos[t]]
                nres += 1
        else:
            keep = np.zeros(m, dtype=np.bool_)
            starts = np.empty(2, dtype=np.int64)
            starts[0] = 0
            starts[1] = m
            nms_sorted_segments(x1, y1, x2, y2, starts, iou_thresh, keep)
            for j in range(m):
                if keep[j]:
                    res_scores[nres] = cs[j]
                    res_anchor[nres] = anchors[j]
                    res_class[nres] = classes[j]
                    nres += 1
    if nres == 0:
        return 0
    order = _stable_desc(res_scores[:nres])
    count = min(nres, max_det)
    for r in range(count):
        q = order[r]
        a = res_anchor[q]
        c = res_class[q]
        bc = c if cb > 1 else 0
        out[r, 0] = boxes[a, bc, 0]
        out[r, 1] = boxes[a, bc, 1]
        out[r, 2] = boxes[a, bc, 2]
        out[r, 3] = boxes[a, bc, 3]
        out[r, 4] = res_scores[q]
        out[r, 5] = c
    return count


@numba.njit(**_JIT)
def _batch_serial(boxes, scores, st, it, topk, max_det, agnostic, soft, gaussian, sigma, out, counts):
    for b in range(scores.shape[0]):
        counts[b] = _image(boxes[b], scores[b], st, it, topk, max_det, agnostic, soft, gaussian, sigma, out[b])


@numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _batch_parallel(boxes, scores, st, it, topk, max_det, agnostic, soft, gaussian, sigma, out, counts):
    for b in numba.prange(scores.shape[0]):
        counts[b] = _image(boxes[b], scores[b], st, it, topk, max_det, agnostic, soft, gaussian, sigma, out[b])


def multiclass_nms_cpu(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    score_thresh: float,
    iou_thresh: float,
    pre_nms_topk: int,
    max_detections: int,
    class_agnostic: bool,
    soft_nms: str | None,
    sigma: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    work = boxes.dtype if boxes.dtype in (torch.float32, torch.float64) else torch.float32
    b = boxes.detach().to(work).contiguous().numpy()
    if b.ndim == 3:
        b = b[:, :, None, :]  # (B, N, 4) -> (B, N, 1, 4): one box for every class
    s_work = scores.dtype if scores.dtype in (torch.float32, torch.float64) else torch.float32
    s = scores.detach().to(s_work).contiguous().numpy()
    num_images = s.shape[0]
    out = np.zeros((num_images, max_detections, 6), dtype=b.dtype)
    out[:, :, 5] = -1
    counts = np.zeros(num_images, dtype=np.int64)
    st = s.dtype.type(score_thresh)
    sig = s.dtype.type(sigma)
    args = (b, s, st, float(iou_thresh), int(pre_nms_topk), int(max_detections), bool(class_agnostic),
            soft_nms is not None, soft_nms == "gaussian", sig, out, counts)
    if allowed_threads() > 1 and num_images > 1 and s.size >= _PARALLEL_MIN_ELEMS:
        run_threaded(_batch_parallel, *args)
    else:
        _batch_serial(*args)
    return torch.from_numpy(out), torch.from_numpy(counts)
