"""numba kernels for greedy NMS on CPU.

Semantics (torchvision's, with a fixed tie rule): boxes are visited by decreasing score, ties by
increasing index; a box is kept unless an already kept box (of the same class) has
``inter / (area_kept + area_box - inter) > iou_threshold``, computed in the input precision exactly as
torchvision's CPU kernel computes it.

Algorithm: one stable LSD radix sort of the scores (O(N)), then, per class segment, the "check
against kept boxes" form of greedy NMS with a uniform grid over the kept boxes, so a box is compared
only with kept boxes that share a grid cell with it (IoU > t >= 0 needs a positive intersection, and
overlapping boxes always share a cell). Cost is about O(N * local density) instead of O(N * kept).
A negative threshold, non-finite coordinates or a small segment use the plain O(N * kept) scan.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

__all__ = ["nms_cpu", "batched_nms_cpu", "nms_sorted_segments"]

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}
_SMALL_SEGMENT = 48  # below this, the plain scan beats building a grid
_BIG_CELLS = 16  # a kept box touching more cells than this goes to the "big" list


# ---------------------------------------------------------------------------------------------
# Sorting: (score descending, index ascending) with a stable radix sort
# ---------------------------------------------------------------------------------------------


@numba.njit(**_JIT)
def _desc_keys32(scores):
    # Map float32 bit patterns to uint32 keys whose ascending order is the scores' descending order.
    # -0.0 is folded onto +0.0 so that the two tie, as they do for torch.sort.
    n = scores.shape[0]
    keys = np.empty(n, dtype=np.uint32)
    bits = scores.view(np.uint32)
    for i in range(n):
        b = bits[i]
        if b == np.uint32(0x80000000):
            b = np.uint32(0)
        if b & np.uint32(0x80000000):
            k = ~b  # negative: larger magnitude -> smaller float
        else:
            k = b | np.uint32(0x80000000)
        keys[i] = ~k
    return keys


@numba.njit(**_JIT)
def _desc_keys64(scores):
    n = scores.shape[0]
    keys = np.empty(n, dtype=np.uint64)
    bits = scores.view(np.uint64)
    sign = np.uint64(0x8000000000000000)
    for i in range(n):
        b = bits[i]
        if b == sign:
            b = np.uint64(0)
        if b & sign:
            k = ~b
        else:
            k = b | sign
        keys[i] = ~k
    return keys


@numba.njit(**_JIT)
def _radix_argsort(keys, nbits):
    """Stable argsort of unsigned keys (ascending) by LSD radix sort, 11 bits a pass."""
    n = keys.shape[0]
    if n <= 512:  # the 2048-bucket passes cost more than a merge sort here
        return np.argsort(keys, kind="mergesort").astype(np.int64)
    idx = np.arange(n).astype(np.int64)
    k = keys.copy()
    k2 = np.empty_like(k)
    idx2 = np.empty_like(idx)
    counts = np.zeros(2048, dtype=np.int64)
    shift = 0
    while shift < nbits:
        counts[:] = 0
        for i in range(n):
            counts[(k[i] >> shift) & 2047] += 1
        # skip passes where every key has the same digit (e.g. high bits of scores in [0, 1])
        if counts.max() == n:
            shift += 11
            continue
        total = 0
        for d in range(2048):
            c = counts[d]
            counts[d] = total
            total += c
        for i in range(n):
            d = (k[i] >> shift) & 2047
            p = counts[d]
            counts[d] = p + 1
            k2[p] = k[i]
            idx2[p] = idx[i]
        k, k2 = k2, k
        idx, idx2 = idx2, idx
        shift += 11
    return idx


# ---------------------------------------------------------------------------------------------
# Greedy NMS on segments of score-sorted boxes
# ---------------------------------------------------------------------------------------------


@numba.njit(inline="always")
def _overlap(x1, y1, x2, y2, area, k, p, zero):
    # torchvision CPU: w = max(0, min(x2) - max(x1)); ovr = inter / (iarea + areas[j] - inter)
    w = min(x2[k], x2[p]) - max(x1[k], x1[p])
    h = min(y2[k], y2[p]) - max(y1[k], y1[p])
    w = w if w > zero else zero
    h = h if h > zero else zero
    inter = w * h
    return inter / (area[k] + area[p] - inter)


@numba.njit(inline="always")
def _overlap_entry(eb, t, px1, py1, px2, py2, parea, zero):
    # Same arithmetic as _overlap, with the kept box read from the entry's own copy (cache-friendly).
    w = min(eb[t, 2], px2) - max(eb[t, 0], px1)
    h = min(eb[t, 3], py2) - max(eb[t, 1], py1)
    w = w if w > zero else zero
    h = h if h > zero else zero
    inter = w * h
    return inter / (eb[t, 4] + parea - inter)


@numba.njit(**_JIT)
def _scan_segment(x1, y1, x2, y2, area, s, e, thr, keep, kept, zero):
    """Plain greedy scan of positions [s, e): compare each box with every kept box."""
    nk = 0
    for p in range(s, e):
        suppressed = False
        for q in range(nk):
            if _overlap(x1, y1, x2, y2, area, kept[q], p, zero) > thr:
                suppressed = True
                break
        if not suppressed:
            keep[p] = True
            kept[nk] = p
            nk += 1


@numba.njit(**_JIT)
def _grid_segment(x1, y1, x2, y2, area, s, e, thr, keep, kept, zero):
    """Greedy NMS of positions [s, e) with a uniform grid over kept boxes (requires thr >= 0)."""
    # Grid over the boxes with positive width and height; the others can neither suppress nor be
    # suppressed when thr >= 0 (their intersection with anything is 0), so they are simply kept.
    nvalid = 0
    minx = np.inf
    miny = np.inf
    maxx = -np.inf
    maxy = -np.inf
    sumw = 0.0
    sumh = 0.0
    for p in range(s, e):
        w = float(x2[p] - x1[p])
        h = float(y2[p] - y1[p])
        if w > 0 and h > 0:
            nvalid += 1
            minx = min(minx, float(x1[p]))
            miny = min(miny, float(y1[p]))
            maxx = max(maxx, float(x2[p]))
            maxy = max(maxy, float(y2[p]))
            sumw += w
            sumh += h
    if nvalid == 0:
        for p in range(s, e):
            keep[p] = True
        return
    cw = sumw / nvalid
    ch = sumh / nvalid
    # clamp before converting: tiny boxes spread far apart give ratios beyond int64 (undefined in LLVM)
    gx = max(1, int(math.ceil(min((maxx - minx) / cw, 4096.0))))
    gy = max(1, int(math.ceil(min((maxy - miny) / ch, 4096.0))))
    max_cells = max(16, 2 * nvalid)
    while gx * gy > max_cells:
        gx = max(1, (gx + 1) // 2)
        gy = max(1, (gy + 1) // 2)
    inv_x = gx / max(maxx - minx, 1e-300)
    inv_y = gy / max(maxy - miny, 1e-300)

    # Per-cell singly linked lists, appended at the tail: a box is compared with the oldest (highest
    # scoring) kept boxes of its cells first, which are the likeliest to suppress it.
    head = np.full(gx * gy, -1, dtype=np.int64)
    tail = np.empty(gx * gy, dtype=np.int64)
    cap = 4 * nvalid + 16
    nxt = np.empty(cap, dtype=np.int64)
    eb = np.empty((cap, 5), dtype=x1.dtype)  # entry copy of the kept box: x1, y1, x2, y2, area
    nent = 0
    big = np.empty(e - s, dtype=np.int64)
    nbig = 0
    nk = 0  # kept boxes with positive area, in `kept`

    for p in range(s, e):
        px1, py1, px2, py2, parea = x1[p], y1[p], x2[p], y2[p], area[p]
        w = px2 - px1
        h = py2 - py1
        if not (w > 0 and h > 0):
            keep[p] = True
            continue
        c0 = min(gx - 1, max(0, int((float(x1[p]) - minx) * inv_x)))
        c1 = min(gx - 1, max(0, int((float(x2[p]) - minx) * inv_x)))
        r0 = min(gy - 1, max(0, int((float(y1[p]) - miny) * inv_y)))
        r1 = min(gy - 1, max(0, int((float(y2[p]) - miny) * inv_y)))
        ncells = (c1 - c0 + 1) * (r1 - r0 + 1)
        suppressed = False
        for q in range(nbig):
            if _overlap(x1, y1, x2, y2, area, big[q], p, zero) > thr:
                suppressed = True
                break
        if not suppressed:
            if ncells > _BIG_CELLS:
                for q in range(nk):
                    if _overlap(x1, y1, x2, y2, area, kept[q], p, zero) > thr:
                        suppressed = True
                        break
            else:
                for r in range(r0, r1 + 1):
                    for c in range(c0, c1 + 1):
                        t = head[r * gx + c]
                        while t >= 0:
                            if _overlap_entry(eb, t, px1, py1, px2, py2, parea, zero) > thr:
                                suppressed = True
                                break
                            t = nxt[t]
                        if suppressed:
                            break
                    if suppressed:
                        break
        if suppressed:
            continue
        keep[p] = True
        kept[nk] = p
        nk += 1
        if ncells > _BIG_CELLS:
            big[nbig] = p
            nbig += 1
            continue
        if nent + ncells > cap:
            cap = 2 * (nent + ncells)
            nxt2 = np.empty(cap, dtype=np.int64)
            eb2 = np.empty((cap, 5), dtype=x1.dtype)
            nxt2[:nent] = nxt[:nent]
            eb2[:nent] = eb[:nent]
            nxt = nxt2
            eb = eb2
        for r in range(r0, r1 + 1):
            for c in range(c0, c1 + 1):
                cell = r * gx + c
                eb[nent, 0] = px1
                eb[nent, 1] = py1
                eb[nent, 2] = px2
                eb[nent, 3] = py2
                eb[nent, 4] = parea
                nxt[nent] = -1
                if head[cell] < 0:
                    head[cell] = nent
                else:
                    nxt[tail[cell]] = nent
                tail[cell] = nent
                nent += 1


@numba.njit(**_JIT)
def _segments_finite(x1, y1, x2, y2, s, e):
    for p in range(s, e):
        if not (math.isfinite(x1[p]) and math.isfinite(y1[p]) and math.isfinite(x2[p]) and math.isfinite(y2[p])):
            return False
    return True


@numba.njit(**_JIT)
def nms_sorted_segments(x1, y1, x2, y2, starts, thr, keep):
    """Greedy NMS on each segment ``[starts[g], starts[g + 1])`` of score-sorted column arrays.

    ``keep`` (bool, zeroed) receives True at kept positions. Area is computed here as torchvision does.
    """
    n = x1.shape[0]
    if n == 0:
        return
    area = (x2 - x1) * (y2 - y1)
    kept = np.empty(n, dtype=np.int64)
    zero = np.zeros_like(x1[:1])[0]  # typed like the boxes: float32 math stays float32
    for g in range(starts.shape[0] - 1):
        s = starts[g]
        e = starts[g + 1]
        if e - s <= _SMALL_SEGMENT or not thr >= 0 or not _segments_finite(x1, y1, x2, y2, s, e):
            _scan_segment(x1, y1, x2, y2, area, s, e, thr, keep, kept, zero)
        else:
            _grid_segment(x1, y1, x2, y2, area, s, e, thr, keep, kept, zero)


@numba.njit(**_JIT)
def _gather_columns(boxes, order):
    n = order.shape[0]
    x1 = np.empty(n, dtype=boxes.dtype)
    y1 = np.empty(n, dtype=boxes.dtype)
    x2 = np.empty(n, dtype=boxes.dtype)
    y2 = np.empty(n, dtype=boxes.dtype)
    for p in range(n):
        i = order[p]
        x1[p] = boxes[i, 0]
        y1[p] = boxes[i, 1]
        x2[p] = boxes[i, 2]
        y2[p] = boxes[i, 3]
    return x1, y1, x2, y2


@numba.njit(**_JIT)
def _group_by_class(order, idxs):
    """Stable counting sort of the score order by class: returns (order by class, segment starts)."""
    n = order.shape[0]
    lo = idxs.min()
    hi = idxs.max()
    span = hi - lo + 1
    if span <= 4 * n + 1024:
        counts = np.zeros(span + 1, dtype=np.int64)
        for p in range(n):
            counts[idxs[order[p]] - lo + 1] += 1
        nseg = 0
        for c in range(1, span + 1):
            if counts[c] > 0:
                nseg += 1
        starts = np.empty(nseg + 1, dtype=np.int64)
        g = 0
        for c in range(span):
            if counts[c + 1] > 0:
                starts[g] = counts[c]
                g += 1
            counts[c + 1] += counts[c]
        starts[nseg] = n
        pos = counts[:span].copy()
        out = np.empty(n, dtype=np.int64)
        for p in range(n):
            c = idxs[order[p]] - lo
            out[pos[c]] = order[p]
            pos[c] += 1
        return out, starts
    # Sparse class ids: sort by (class, score rank) instead.
    rank = np.empty(n, dtype=np.int64)
    for p in range(n):
        rank[order[p]] = p
    cls_sorted = np.argsort(idxs[order], kind="mergesort")
    out = order[cls_sorted]
    nseg = 1
    for p in range(1, n):
        if idxs[out[p]] != idxs[out[p - 1]]:
            nseg += 1
    starts = np.empty(nseg + 1, dtype=np.int64)
    starts[0] = 0
    g = 1
    for p in range(1, n):
        if idxs[out[p]] != idxs[out[p - 1]]:
            starts[g] = p
            g += 1
    starts[nseg] = n
    return out, starts


def _as_work_arrays(boxes: torch.Tensor, scores: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    work = boxes.dtype if boxes.dtype in (torch.float32, torch.float64) else torch.float32
    b = boxes.detach().to(work).contiguous().numpy()
    sdtype = scores.dtype if scores.dtype in (torch.float32, torch.float64) else torch.float32
    s = scores.detach().to(sdtype).contiguous().numpy()
    return b, s


@numba.njit(**_JIT)
def _argsort_desc_jit(scores):
    if scores.itemsize == 8:  # float64 (both branches compile; only one runs)
        return _radix_argsort(_desc_keys64(scores), 64)
    return _radix_argsort(_desc_keys32(scores), 32)


@numba.njit(**_JIT)
def _nms_kernel(boxes, scores, thr):
    order = _argsort_desc_jit(scores)
    n = order.shape[0]
    x1, y1, x2, y2 = _gather_columns(boxes, order)
    keep = np.zeros(n, dtype=np.bool_)
    starts = np.empty(2, dtype=np.int64)
    starts[0] = 0
    starts[1] = n
    nms_sorted_segments(x1, y1, x2, y2, starts, thr, keep)
    return order[keep]


@numba.njit(**_JIT)
def _batched_nms_kernel(boxes, scores, idxs, thr):
    order = _argsort_desc_jit(scores)
    n = order.shape[0]
    by_class, starts = _group_by_class(order, idxs)
    x1, y1, x2, y2 = _gather_columns(boxes, by_class)
    keep = np.zeros(n, dtype=np.bool_)
    nms_sorted_segments(x1, y1, x2, y2, starts, thr, keep)
    # back to the global (score desc, index asc) order without another sort
    kept_flag = np.zeros(n, dtype=np.bool_)
    for p in range(n):
        if keep[p]:
            kept_flag[by_class[p]] = True
    total = 0
    for p in range(n):
        if kept_flag[order[p]]:
            total += 1
    out = np.empty(total, dtype=np.int64)
    q = 0
    for p in range(n):
        if kept_flag[order[p]]:
            out[q] = order[p]
            q += 1
    return out


def nms_cpu(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS of CPU tensors; int64 indices of kept boxes by decreasing score (ties: lower index)."""
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64)
    b, s = _as_work_arrays(boxes, scores)
    return torch.from_numpy(_nms_kernel(b, s, float(iou_threshold)))


def batched_nms_cpu(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Per-class greedy NMS of CPU tensors; kept indices by decreasing score (ties: lower index)."""
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64)
    b, s = _as_work_arrays(boxes, scores)
    cls = idxs.detach().to(torch.int64).contiguous().numpy()
    return torch.from_numpy(_batched_nms_kernel(b, s, cls, float(iou_threshold)))
