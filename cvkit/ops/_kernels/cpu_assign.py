"""numba kernels for anchor matching on CPU: batched max-IoU matching and the d2l greedy assignment.

``match_cpu`` never builds the ``[B, A, M]`` IoU table. It indexes the anchors once per call (they are
shared by the batch) in a few uniform grids, one per anchor size class (sizes within a factor of 2),
keyed by anchor centre (:class:`AnchorIndex`); a ground truth then visits only the grid cells whose
anchors can overlap it (:func:`_candidates`, the one grid walk). Extra memory is O(A + M) per image plus
the O(A) index. IoU is computed exactly as ``box_iou`` computes it (torchvision's order of operations,
``union = (area_a + area_g) - inter``, 0 where the union is not positive), in the input precision, so the
matches equal those of a dense ``box_iou`` + matcher.

The plain reference is the same kernel with ``brute=True``: one cell holding every anchor, i.e. the dense
per-image loop over all anchors for every ground truth (the tests compare the two; the grid is kept
because it is measurably faster: ``benchmarks/bench_assign.py``, ``op=match_cpu grid vs dense`` rows).

Anchors with zero or negative width or height never overlap anything (their IoU is 0) and are left out
of the index; anchors with non-finite coordinates make the kernel fall back to visiting every anchor.

``greedy_assign_cpu`` is the d2l book's ``assign_anchor_to_bbox`` for a batch: it keeps, per ground
truth, its best still-free anchor instead of re-scanning the whole ``[A, M]`` table after every pick.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np
import torch

from cvkit.ops._kernels import allowed_threads, run_threaded

__all__ = ["match_cpu", "greedy_assign_cpu", "MODE_NONE", "MODE_SSD", "MODE_RCNN"]

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}

MODE_NONE, MODE_SSD, MODE_RCNN = 0, 1, 2
_BACKGROUND, _IGNORE = -1, -2  # must equal cvkit.ops.assign.BACKGROUND / IGNORE
# size class of an anchor left out of the index (zero or negative width or height); size classes themselves
# are floor(log2(max side)), negative for anchors under 1 unit (normalized coordinates), so not -1
_NOT_INDEXED = -(1 << 62)


class AnchorIndex(NamedTuple):
    """The anchors of one call, sorted by (size class, cell y, cell x), and G grids over their centres.

    Anchor arrays (``A`` rows, in sorted order unless said): ``boxes [A, 4]``, ``areas [A]``,
    ``order [A]`` (sorted position -> anchor index; degenerate anchors last), ``inv [A]`` (anchor index ->
    sorted position). Per grid ``g`` (one per size class): the centre of cell (0, 0) ``origin_x/y [G]``,
    ``inv_cell [G]`` (1 / cell side), ``nx/ny [G]`` cells, ``half_x/y [G]`` (the largest half extent of its
    anchors), ``cell_start [G + 1]`` (its first global cell id). ``cell_ptr [C + 1]``: the sorted anchors of
    global cell ``c`` are ``cell_ptr[c]:cell_ptr[c + 1]``. ``brute``: one cell holds every anchor.
    """

    boxes: np.ndarray
    areas: np.ndarray
    order: np.ndarray
    inv: np.ndarray
    origin_x: np.ndarray
    origin_y: np.ndarray
    inv_cell: np.ndarray
    nx: np.ndarray
    ny: np.ndarray
    half_x: np.ndarray
    half_y: np.ndarray
    cell_start: np.ndarray
    cell_ptr: np.ndarray
    brute: bool


class MatchArrays(NamedTuple):
    """The outputs of ``match_cpu``, written image by image: ``matched_idxs [B, A]``, ``matched_iou [B, A]``,
    ``gt_best_iou [B, M]``, ``gt_best_anchor [B, M]`` (see ``cvkit.ops.assign.match_anchors``)."""

    matched_idxs: np.ndarray
    matched_iou: np.ndarray
    gt_best_iou: np.ndarray
    gt_best_anchor: np.ndarray


# ---------------------------------------------------------------------------------------------
# The anchor index
# ---------------------------------------------------------------------------------------------


@numba.njit(**_JIT)
def _sorted_index(anchors, order, origin_x, origin_y, inv_cell, nx, ny, half_x, half_y, cell_start, cell_ptr,
                  brute):
    n = order.shape[0]
    boxes = np.empty((n, 4), dtype=anchors.dtype)
    areas = np.empty(n, dtype=anchors.dtype)
    inv = np.empty(n, dtype=np.int64)
    for s in range(n):
        a = order[s]
        inv[a] = s
        for c in range(4):
            boxes[s, c] = anchors[a, c]
        areas[s] = (anchors[a, 2] - anchors[a, 0]) * (anchors[a, 3] - anchors[a, 1])
    return AnchorIndex(boxes, areas, order, inv, origin_x, origin_y, inv_cell, nx, ny, half_x, half_y,
                       cell_start, cell_ptr, brute)


@numba.njit(**_JIT)
def _single_cell_index(anchors):
    """Every anchor in one cell: the dense reference walk."""
    n = anchors.shape[0]
    zeros = np.zeros(1)
    ones = np.ones(1, dtype=np.int64)
    return _sorted_index(anchors, np.arange(n).astype(np.int64), zeros, zeros.copy(), zeros.copy(), ones,
                         ones.copy(), zeros.copy(), zeros.copy(), np.array([0, 1], dtype=np.int64),
                         np.array([0, n], dtype=np.int64), True)


@numba.njit(**_JIT)
def _build_index(anchors, brute):
    """:class:`AnchorIndex` of ``anchors [A, 4]``: the grids, or one cell when ``brute`` or any anchor
    coordinate is not finite."""
    n = anchors.shape[0]
    finite = True
    for i in range(n):
        for c in range(4):
            if not math.isfinite(anchors[i, c]):
                finite = False
    if brute or not finite:
        return _single_cell_index(anchors)

    # size class = floor(log2(max side)); degenerate anchors (w <= 0 or h <= 0) get _NOT_INDEXED
    key_group = np.full(n, _NOT_INDEXED, dtype=np.int64)
    lo = 1 << 30
    hi = -(1 << 30)
    for i in range(n):
        w = np.float64(anchors[i, 2]) - np.float64(anchors[i, 0])
        h = np.float64(anchors[i, 3]) - np.float64(anchors[i, 1])
        if w > 0 and h > 0:
            g = int(math.floor(math.log2(max(w, h))))
            key_group[i] = g
            lo = min(lo, g)
            hi = max(hi, g)
    if lo > hi:  # nothing indexable: no grid, every anchor IoU 0
        empty = np.zeros(0)
        none = np.zeros(0, dtype=np.int64)
        return _sorted_index(anchors, np.arange(n).astype(np.int64), empty, empty.copy(), empty.copy(), none,
                             none.copy(), empty.copy(), empty.copy(), np.zeros(1, dtype=np.int64),
                             np.zeros(1, dtype=np.int64), False)
    num_classes = hi - lo + 1
    # per class extents of the centres and the largest half sizes
    cmin_x = np.full(num_classes, np.inf)
    cmin_y = np.full(num_classes, np.inf)
    cmax_x = np.full(num_classes, -np.inf)
    cmax_y = np.full(num_classes, -np.inf)
    hx = np.zeros(num_classes)
    hy = np.zeros(num_classes)
    count = np.zeros(num_classes, dtype=np.int64)
    cx = np.empty(n)
    cy = np.empty(n)
    for i in range(n):
        g = key_group[i]
        if g == _NOT_INDEXED:
            continue
        g -= lo
        x1, y1 = np.float64(anchors[i, 0]), np.float64(anchors[i, 1])
        x2, y2 = np.float64(anchors[i, 2]), np.float64(anchors[i, 3])
        cx[i] = (x1 + x2) * 0.5
        cy[i] = (y1 + y2) * 0.5
        cmin_x[g] = min(cmin_x[g], cx[i])
        cmax_x[g] = max(cmax_x[g], cx[i])
        cmin_y[g] = min(cmin_y[g], cy[i])
        cmax_y[g] = max(cmax_y[g], cy[i])
        hx[g] = max(hx[g], max(cx[i] - x1, x2 - cx[i]))
        hy[g] = max(hy[g], max(cy[i] - y1, y2 - cy[i]))
        count[g] += 1
    # keep only classes that hold anchors, and size their grids
    num_groups = 0
    remap = np.full(num_classes, -1, dtype=np.int64)
    for g in range(num_classes):
        if count[g] > 0:
            remap[g] = num_groups
            num_groups += 1
    origin_x = np.zeros(num_groups)
    origin_y = np.zeros(num_groups)
    inv_cell = np.zeros(num_groups)
    nx = np.zeros(num_groups, dtype=np.int64)
    ny = np.zeros(num_groups, dtype=np.int64)
    half_x = np.zeros(num_groups)
    half_y = np.zeros(num_groups)
    cell_start = np.zeros(num_groups + 1, dtype=np.int64)
    for g in range(num_classes):
        r = remap[g]
        if r < 0:
            continue
        cell = max(2.0 * hx[g], 2.0 * hy[g])
        span_x = cmax_x[g] - cmin_x[g]
        span_y = cmax_y[g] - cmin_y[g]
        cell = max(cell, max(span_x, span_y) / 4096.0, 1e-12)
        gx = int(span_x / cell) + 1
        gy = int(span_y / cell) + 1
        limit = 4 * count[g] + 64
        while gx * gy > limit:  # keep the grid in proportion to the anchors
            cell *= 1.5
            gx = int(span_x / cell) + 1
            gy = int(span_y / cell) + 1
        origin_x[r] = cmin_x[g]
        origin_y[r] = cmin_y[g]
        inv_cell[r] = 1.0 / cell
        nx[r] = gx
        ny[r] = gy
        half_x[r] = hx[g]
        half_y[r] = hy[g]
        cell_start[r + 1] = cell_start[r] + gx * gy
    # counting sort of the anchors by global cell id
    total_cells = cell_start[num_groups]
    cell_of = np.full(n, -1, dtype=np.int64)
    cell_ptr = np.zeros(total_cells + 1, dtype=np.int64)
    num_indexed = 0
    for i in range(n):
        g = key_group[i]
        if g == _NOT_INDEXED:
            continue
        r = remap[g - lo]
        ix = min(int((cx[i] - origin_x[r]) * inv_cell[r]), nx[r] - 1)
        iy = min(int((cy[i] - origin_y[r]) * inv_cell[r]), ny[r] - 1)
        c = cell_start[r] + iy * nx[r] + ix
        cell_of[i] = c
        cell_ptr[c + 1] += 1
        num_indexed += 1
    for c in range(total_cells):
        cell_ptr[c + 1] += cell_ptr[c]
    fill = cell_ptr[:-1].copy()
    order = np.empty(n, dtype=np.int64)
    tail = num_indexed
    for i in range(n):
        c = cell_of[i]
        if c < 0:
            order[tail] = i
            tail += 1
        else:
            order[fill[c]] = i
            fill[c] += 1
    return _sorted_index(anchors, order, origin_x, origin_y, inv_cell, nx, ny, half_x, half_y, cell_start,
                         cell_ptr, False)


@numba.njit(inline="always")
def _cell_range(lo_v, hi_v, origin, inv, n_cells):
    # Cells whose centres may lie in [lo_v, hi_v]; (1, 0) when none. Same floor as the index build.
    a = (lo_v - origin) * inv
    b = (hi_v - origin) * inv
    if b < 0 or a >= n_cells:
        return 1, 0
    i0 = 0 if a < 0 else int(a)
    i1 = n_cells - 1 if b >= n_cells else int(b)
    return i0, i1


# ---------------------------------------------------------------------------------------------
# IoU of one anchor and one ground truth, as box_iou computes it, and the grid walk
# ---------------------------------------------------------------------------------------------


@numba.njit(inline="always")
def _iou(ax1, ay1, ax2, ay2, area_a, gx1, gy1, gx2, gy2, area_g, zero):
    w = min(ax2, gx2) - max(ax1, gx1)
    h = min(ay2, gy2) - max(ay1, gy1)
    w = w if w > 0 else zero
    h = h if h > 0 else zero
    inter = w * h
    union = (area_a + area_g) - inter
    return inter / union if union > 0 else zero


@numba.njit(inline="always")
def _candidates(index, gx1, gy1, gx2, gy2, zero, positions, ious):
    """The sorted anchors that may overlap the box ``(gx1, gy1, gx2, gy2)`` (of positive size) and their IoU
    with it: written to ``positions[:k]`` / ``ious[:k]``, returns ``k``. Anchors outside every visited cell
    have IoU 0 with the box."""
    area_g = (gx2 - gx1) * (gy2 - gy1)
    boxes, areas = index.boxes, index.areas
    k = 0
    if index.brute:
        for s in range(boxes.shape[0]):
            positions[k] = s
            ious[k] = _iou(boxes[s, 0], boxes[s, 1], boxes[s, 2], boxes[s, 3], areas[s], gx1, gy1, gx2, gy2,
                           area_g, zero)
            k += 1
        return k
    x1, y1, x2, y2 = np.float64(gx1), np.float64(gy1), np.float64(gx2), np.float64(gy2)
    for grp in range(index.nx.shape[0]):
        hx, hy = index.half_x[grp], index.half_y[grp]
        # an anchor overlaps only if its centre lies within half its extent of the box; the small margin
        # absorbs rounding of the centres
        tol_x = 1e-6 * (abs(x1) + abs(x2) + hx) + 1e-9
        tol_y = 1e-6 * (abs(y1) + abs(y2) + hy) + 1e-9
        inv, row = index.inv_cell[grp], index.nx[grp]
        ix0, ix1 = _cell_range(x1 - hx - tol_x, x2 + hx + tol_x, index.origin_x[grp], inv, row)
        iy0, iy1 = _cell_range(y1 - hy - tol_y, y2 + hy + tol_y, index.origin_y[grp], inv, index.ny[grp])
        if ix0 > ix1 or iy0 > iy1:
            continue
        for iy in range(iy0, iy1 + 1):
            base = index.cell_start[grp] + iy * row
            for s in range(index.cell_ptr[base + ix0], index.cell_ptr[base + ix1 + 1]):
                positions[k] = s
                ious[k] = _iou(boxes[s, 0], boxes[s, 1], boxes[s, 2], boxes[s, 3], areas[s], gx1, gy1, gx2, gy2,
                               area_g, zero)
                k += 1
    return k


@numba.njit(inline="always")
def _usable_gt(gt, valid, m):
    if not valid[m]:
        return False
    for c in range(4):
        if not math.isfinite(gt[m, c]):
            return False
    return True


# ---------------------------------------------------------------------------------------------
# Batched max-IoU matching
# ---------------------------------------------------------------------------------------------


@numba.njit(**_JIT)
def _match_image(b, anchors, index, gt, valid, k, mode, out):
    """Image ``b``: ground truths ``gt [M, 4]`` / ``valid [M]`` against the indexed anchors, into ``out``
    (a :class:`MatchArrays`). ``k``: typed constants (zero, pos_thresh, neg_thresh), so that float32 math
    never widens to float64."""
    zero, pos, neg = k[0], k[1], k[2]
    order = index.order
    n = order.shape[0]
    num_gt = gt.shape[0]
    first = -1
    for m in range(num_gt):
        if _usable_gt(gt, valid, m):
            first = m
            break
    best = np.zeros(n, dtype=index.boxes.dtype)  # per sorted anchor: best IoU so far
    best_gt = np.full(n, first, dtype=np.int64)  # ... and its ground truth (ties: the lowest index)
    positions = np.empty(n, dtype=np.int64)  # _candidates' scratch
    ious = np.empty(n, dtype=index.boxes.dtype)
    for m in range(num_gt):
        out.gt_best_iou[b, m] = zero
        out.gt_best_anchor[b, m] = -1
        if not _usable_gt(gt, valid, m):
            continue
        out.gt_best_anchor[b, m] = 0 if n > 0 else -1  # all IoUs 0: the first anchor, as torch's argmax
        gx1, gy1, gx2, gy2 = gt[m, 0], gt[m, 1], gt[m, 2], gt[m, 3]
        if not (gx2 > gx1 and gy2 > gy1):
            continue  # an empty ground truth overlaps nothing
        g_best = zero
        g_anchor = out.gt_best_anchor[b, m]
        for j in range(_candidates(index, gx1, gy1, gx2, gy2, zero, positions, ious)):
            s, iou = positions[j], ious[j]
            if iou > best[s]:
                best[s] = iou
                best_gt[s] = m
            if iou > g_best or (iou == g_best and order[s] < g_anchor):
                g_best = iou
                g_anchor = order[s]
        out.gt_best_iou[b, m] = g_best
        out.gt_best_anchor[b, m] = g_anchor

    for a in range(n):  # in anchor order: sequential writes, faster than scattering through ``order``
        s = index.inv[a]
        v = best[s]
        out.matched_iou[b, a] = v
        if first < 0 or v < neg:
            out.matched_idxs[b, a] = _BACKGROUND
        elif v < pos:
            out.matched_idxs[b, a] = _IGNORE
        else:
            out.matched_idxs[b, a] = best_gt[s]
    if first < 0 or n == 0:
        return

    if mode == MODE_SSD:
        # each ground truth keeps its best anchor; a later ground truth wins a shared anchor
        for m in range(num_gt):
            if not _usable_gt(gt, valid, m):
                continue
            a = out.gt_best_anchor[b, m]
            out.matched_idxs[b, a] = m
            ax1, ay1, ax2, ay2 = anchors[a, 0], anchors[a, 1], anchors[a, 2], anchors[a, 3]
            gx1, gy1, gx2, gy2 = gt[m, 0], gt[m, 1], gt[m, 2], gt[m, 3]
            out.matched_iou[b, a] = _iou(ax1, ay1, ax2, ay2, (ax2 - ax1) * (ay2 - ay1),
                                         gx1, gy1, gx2, gy2, (gx2 - gx1) * (gy2 - gy1), zero)
    elif mode == MODE_RCNN:
        # torchvision's Matcher(allow_low_quality_matches=True): every anchor tied at a ground truth's best
        # IoU takes *its own* best ground truth
        for m in range(num_gt):
            if not _usable_gt(gt, valid, m):
                continue
            g_best = out.gt_best_iou[b, m]
            if not (g_best > zero):
                # every anchor has IoU 0 with this ground truth: all of them are tied
                for s in range(n):
                    out.matched_idxs[b, order[s]] = best_gt[s]
                continue
            for j in range(_candidates(index, gt[m, 0], gt[m, 1], gt[m, 2], gt[m, 3], zero, positions, ious)):
                if ious[j] == g_best:
                    s = positions[j]
                    out.matched_idxs[b, order[s]] = best_gt[s]


@numba.njit(**_JIT)
def _match_serial(anchors, index, gt, valid, k, mode, out):
    for b in range(gt.shape[0]):
        _match_image(b, anchors, index, gt[b], valid[b], k, mode, out)


@numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _match_parallel(anchors, index, gt, valid, k, mode, out):
    for b in numba.prange(gt.shape[0]):
        _match_image(b, anchors, index, gt[b], valid[b], k, mode, out)


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def match_cpu(
    anchors: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_valid: torch.Tensor,
    pos_thresh: float,
    neg_thresh: float,
    mode: int,
    brute: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched matching of CPU tensors: anchors ``[A, 4]``, gt ``[B, M, 4]``, valid ``[B, M]`` bool.

    Returns ``(matched_idxs [B, A] int64, matched_iou [B, A], gt_best_iou [B, M], gt_best_anchor [B, M])``
    (see ``cvkit.ops.assign.match_anchors``). float64 is computed in float64, anything else in float32.
    ``brute=True`` visits every anchor for every ground truth (the dense reference the tests compare with).
    """
    work = _work_dtype(torch.promote_types(anchors.dtype, gt_boxes.dtype))
    a_np = anchors.detach().to(work).contiguous().numpy()
    g_np = gt_boxes.detach().to(work).contiguous().numpy()
    v_np = gt_valid.detach().to(torch.bool).contiguous().numpy()
    batch, num_gt = g_np.shape[0], g_np.shape[1]
    num_anchors = a_np.shape[0]
    out = MatchArrays(
        np.empty((batch, num_anchors), dtype=np.int64),
        np.empty((batch, num_anchors), dtype=a_np.dtype),
        np.empty((batch, num_gt), dtype=a_np.dtype),
        np.empty((batch, num_gt), dtype=np.int64),
    )
    if batch > 0:
        index = _build_index(a_np, brute)
        consts = np.array([0, pos_thresh, neg_thresh], dtype=a_np.dtype)
        kernel = _match_parallel if allowed_threads() > 1 and batch > 1 else _match_serial
        run_threaded(kernel, a_np, index, g_np, v_np, consts, mode, out)
    return tuple(torch.from_numpy(x) for x in out)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# The d2l book's greedy assignment, batched
# ---------------------------------------------------------------------------------------------


@numba.njit(**_JIT)
def _greedy_image(b, anchors, gt, thresh, zero, out):
    num_anchors = anchors.shape[0]
    num_gt = gt.shape[0]
    for a in range(num_anchors):
        out[b, a] = -1
    if num_anchors == 0 or num_gt == 0:
        return
    # the [A, M] IoU table of this image (box_iou(anchors, gt))
    table = np.empty((num_anchors, num_gt), dtype=anchors.dtype)
    area_g = np.empty(num_gt, dtype=anchors.dtype)
    for m in range(num_gt):
        area_g[m] = (gt[m, 2] - gt[m, 0]) * (gt[m, 3] - gt[m, 1])
    # per column: its best anchor (the first one on ties), gathered in the same row-major pass
    col_val = np.empty(num_gt, dtype=anchors.dtype)
    col_arg = np.zeros(num_gt, dtype=np.int64)
    for a in range(num_anchors):
        ax1, ay1, ax2, ay2 = anchors[a, 0], anchors[a, 1], anchors[a, 2], anchors[a, 3]
        area_a = (ax2 - ax1) * (ay2 - ay1)
        best = zero
        best_m = 0
        for m in range(num_gt):
            v = _iou(ax1, ay1, ax2, ay2, area_a, gt[m, 0], gt[m, 1], gt[m, 2], gt[m, 3], area_g[m], zero)
            table[a, m] = v
            if a == 0 or v > col_val[m]:
                col_val[m] = v
                col_arg[m] = a
            if m == 0 or v > best:
                best = v
                best_m = m
        if best >= thresh:  # each anchor's best ground truth, when good enough
            out[b, a] = best_m
    # greedy pass: the global maximum of the table (first in row-major order on ties) pairs an anchor with a
    # ground truth, whose row and column are then discarded. Per column, its best free anchor is kept.
    row_free = np.ones(num_anchors, dtype=np.bool_)
    col_free = np.ones(num_gt, dtype=np.bool_)
    free_rows = num_anchors
    for _ in range(num_gt):
        if free_rows == 0:
            # the book's table is all -1 now: argmax is element 0, i.e. anchor 0 takes ground truth 0
            out[b, 0] = 0
            continue
        pick = -1
        for m in range(num_gt):
            if not col_free[m]:
                continue
            if pick < 0 or col_val[m] > col_val[pick]:
                pick = m
            elif col_val[m] == col_val[pick] and col_arg[m] < col_arg[pick]:
                pick = m
        a_pick = col_arg[pick]
        out[b, a_pick] = pick
        col_free[pick] = False
        row_free[a_pick] = False
        free_rows -= 1
        if free_rows == 0:
            continue
        for m in range(num_gt):  # columns whose best anchor was just taken look again
            if col_free[m] and col_arg[m] == a_pick:
                v = zero
                arg = -1
                for a in range(num_anchors):
                    if row_free[a] and (arg < 0 or table[a, m] > v):
                        v = table[a, m]
                        arg = a
                col_val[m] = v
                col_arg[m] = arg


@numba.njit(**_JIT)
def _greedy_serial(anchors, gt, thresh, zero, out):
    for b in range(gt.shape[0]):
        _greedy_image(b, anchors, gt[b], thresh, zero, out)


@numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _greedy_parallel(anchors, gt, thresh, zero, out):
    for b in numba.prange(gt.shape[0]):
        _greedy_image(b, anchors, gt[b], thresh, zero, out)


def greedy_assign_cpu(anchors: torch.Tensor, gt_boxes: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """d2l assignment for CPU tensors: anchors ``[A, 4]``, gt ``[B, M, 4]`` -> int64 ``[B, A]`` (-1: none)."""
    work = _work_dtype(torch.promote_types(anchors.dtype, gt_boxes.dtype))
    a_np = anchors.detach().to(work).contiguous().numpy()
    g_np = gt_boxes.detach().to(work).contiguous().numpy()
    out = np.empty((g_np.shape[0], a_np.shape[0]), dtype=np.int64)
    thresh = a_np.dtype.type(iou_threshold)
    zero = a_np.dtype.type(0)
    kernel = _greedy_parallel if allowed_threads() > 1 and g_np.shape[0] > 1 else _greedy_serial
    run_threaded(kernel, a_np, g_np, thresh, zero, out)
    return torch.from_numpy(out)
