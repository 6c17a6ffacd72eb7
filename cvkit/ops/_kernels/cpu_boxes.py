"""Fused numba kernels for the pairwise IoU family on CPU.

Each kernel writes the ``[N, M]`` result directly: besides the output it allocates only O(N + M)
column copies of the inputs, never ``[N, M, 2]`` temporaries. The arithmetic follows torchvision's
order of operations step for step (``union = (area1 + area2) - inter`` ...), so results agree to the
last bit for IoU and GIoU; the only differences are cvkit's no-NaN values where torchvision divides 0
by 0 (``cvkit.ops.boxes`` module docstring): a zero union gives IoU 0, a zero enclosing area no GIoU
penalty, a zero diagonal no DIoU penalty, ``atan(0 / 0) = 0`` and a zero CIoU ``alpha`` denominator
``alpha = 0``.

Every kernel compiles with ``error_model="numpy"``: a float division by zero gives inf/NaN as in numpy
(and torch) instead of raising ``ZeroDivisionError``, which ``atan(w / 0)`` of a zero-height box needs
(``atan(inf) = pi/2``, torchvision's value), and the loops carry no zero-divisor checks. The 0/0 cases are
selected away explicitly.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

from cvkit.ops._kernels import run_threaded

__all__ = ["pairwise_cpu"]

_KIND_IOU, _KIND_GIOU, _KIND_DIOU, _KIND_CIOU = 0, 1, 2, 3
_KINDS = {"iou": _KIND_IOU, "giou": _KIND_GIOU, "diou": _KIND_DIOU, "ciou": _KIND_CIOU}
# Below this many pairs the serial kernel wins (the threading layer's start-up dominates).
_PARALLEL_MIN_PAIRS = 1 << 12
_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}


@numba.njit(inline="always")
def _atan_ratio(w, h, zero):
    # atan(w / h) as torchvision computes it (w / +-0 = +-inf: +-pi/2), with 0/0 defined as 0 instead of NaN.
    if h == 0 and w == 0:
        return zero
    return math.atan(w / h)


@numba.njit(inline="always")
def _row(kind, out, i, a, b, area_b, c_b, k):
    # k holds typed constants (0, 1, 2, eps, 4/pi^2) so float32 math never widens to float64.
    zero, one, two, eps, four_over_pi2 = k[0], k[1], k[2], k[3], k[4]
    ax1, ay1, ax2, ay2 = a[i, 0], a[i, 1], a[i, 2], a[i, 3]
    area_a = (ax2 - ax1) * (ay2 - ay1)
    bx1, by1, bx2, by2 = b[0], b[1], b[2], b[3]
    if kind == 3:
        atan_a = _atan_ratio(ax2 - ax1, ay2 - ay1, zero)
    else:
        atan_a = zero
    cxa = (ax1 + ax2) / two
    cya = (ay1 + ay2) / two
    for j in range(bx1.shape[0]):
        w = min(ax2, bx2[j]) - max(ax1, bx1[j])
        h = min(ay2, by2[j]) - max(ay1, by1[j])
        w = w if w > 0 else zero
        h = h if h > 0 else zero
        inter = w * h
        union = (area_a + area_b[j]) - inter
        iou = inter / union if union > 0 else zero
        if kind == 0:
            out[i, j] = iou
            continue
        ew = max(ax2, bx2[j]) - min(ax1, bx1[j])
        eh = max(ay2, by2[j]) - min(ay1, by1[j])
        ew = ew if ew > 0 else zero
        eh = eh if eh > 0 else zero
        if kind == 1:
            enclose = ew * eh
            out[i, j] = iou - (enclose - union) / enclose if enclose > 0 else iou
            continue
        diag = ew * ew + eh * eh + eps
        dx = cxa - c_b[0, j]
        dy = cya - c_b[1, j]
        diou = iou - (dx * dx + dy * dy) / diag if diag > 0 else iou  # diag = 0 only with eps = 0
        if kind == 2:
            out[i, j] = diou
            continue
        d = atan_a - c_b[2, j]
        v = four_over_pi2 * (d * d)
        den = one - iou + v + eps  # 0 only with eps = 0, iou = 1 and v = 0
        alpha = v / den if den > 0 else zero
        out[i, j] = diou - alpha * v


@numba.njit(**_JIT)
def _pairwise_serial(kind, a, b, area_b, c_b, k, out):
    for i in range(a.shape[0]):
        _row(kind, out, i, a, b, area_b, c_b, k)


@numba.njit(**_JIT, parallel=True)
def _pairwise_parallel(kind, a, b, area_b, c_b, k, out):
    for i in numba.prange(a.shape[0]):
        _row(kind, out, i, a, b, area_b, c_b, k)


@numba.njit(**_JIT)
def _columns(b, kind, k):
    """Column copies of ``b``: coordinates, areas and, for DIoU/CIoU, centres and atan(w/h)."""
    m = b.shape[0]
    cols = np.empty((4, m), dtype=b.dtype)
    area = np.empty(m, dtype=b.dtype)
    extra = np.empty((3, m if kind >= 2 else 0), dtype=b.dtype)
    for j in range(m):
        x1, y1, x2, y2 = b[j, 0], b[j, 1], b[j, 2], b[j, 3]
        cols[0, j] = x1
        cols[1, j] = y1
        cols[2, j] = x2
        cols[3, j] = y2
        area[j] = (x2 - x1) * (y2 - y1)
        if kind >= 2:
            extra[0, j] = (x1 + x2) / k[2]
            extra[1, j] = (y1 + y2) / k[2]
            extra[2, j] = _atan_ratio(x2 - x1, y2 - y1, k[0]) if kind == 3 else k[0]
    return cols, area, extra


def pairwise_cpu(boxes1: torch.Tensor, boxes2: torch.Tensor, kind: str, eps: float = 1e-7) -> torch.Tensor:
    """Pairwise IoU/GIoU/DIoU/CIoU of CPU tensors ``[N, 4]`` x ``[M, 4]`` -> ``[N, M]`` (no autograd).

    float32 and float64 are computed in their own precision; float16/bfloat16 and integer boxes are
    computed in float32 (float64 for int64) and returned as float32, as torchvision returns them.
    """
    code = _KINDS[kind]
    if boxes1.dtype in (torch.float32, torch.float64):
        work = boxes1.dtype
    elif boxes1.dtype == torch.int64:
        work = torch.float64
    else:
        work = torch.float32
    out_dtype = boxes1.dtype if boxes1.dtype in (torch.float32, torch.float64) else torch.float32
    a = boxes1.detach().to(work).contiguous().numpy()
    b = boxes2.detach().to(work).contiguous().numpy()
    n, m = a.shape[0], b.shape[0]
    out = np.empty((n, m), dtype=a.dtype)
    if n == 0 or m == 0:
        return torch.from_numpy(out).to(out_dtype)
    consts = np.array([0, 1, 2, eps, 4 / math.pi**2], dtype=a.dtype)
    cols, area_b, extra = _columns(b, code, consts)
    args = (code, a, cols, area_b, extra, consts, out)
    # Small inputs take the serial kernel (no threading start-up), larger ones the prange kernel, even on
    # one thread. (Under numba's default python error model the serial loop stayed scalar for
    # GIoU/DIoU/CIoU; with error_model="numpy" LLVM vectorises both.)
    if n * m >= _PARALLEL_MIN_PAIRS:
        run_threaded(_pairwise_parallel, *args)
    else:
        _pairwise_serial(*args)
    result = torch.from_numpy(out)
    return result if result.dtype == out_dtype else result.to(out_dtype)
