"""Slow pure-Python references and box generators shared by the ops tests (a third opinion)."""

from __future__ import annotations

import math

import numpy as np
import torch


def py_iou(a, b) -> float:
    """IoU of two xyxy boxes with torchvision's CPU NMS arithmetic, in float64 Python math (0/0 -> 0)."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def py_nms(boxes: torch.Tensor, scores: torch.Tensor, thr: float, idxs: torch.Tensor | None = None) -> list[int]:
    """Greedy NMS by (score desc, index asc), suppressing IoU > thr within a class."""
    b = boxes.double().tolist()
    s = scores.double().tolist()
    c = [0] * len(b) if idxs is None else idxs.tolist()
    order = sorted(range(len(b)), key=lambda i: (-s[i], i))
    kept: list[int] = []
    for i in order:
        if all(c[k] != c[i] or not py_iou(b[k], b[i]) > thr for k in kept):
            kept.append(i)
    return kept


def py_soft_nms(boxes, scores, thr, method, sigma, score_thresh):
    """Soft-NMS (Bodla et al.) on one group; returns [(index, score at selection)] in selection order."""
    b = boxes.double().tolist()
    cur = {i: float(s) for i, s in enumerate(scores.tolist()) if s > score_thresh}
    out = []
    while cur:
        best = min(cur, key=lambda i: (-cur[i], i))
        out.append((best, cur.pop(best)))
        for j in list(cur):
            iou = py_iou(b[best], b[j])
            if method == "linear":
                if iou > thr:
                    cur[j] *= 1 - iou
            else:
                cur[j] *= math.exp(-(iou * iou) / sigma)
            if not cur[j] > score_thresh:
                del cur[j]
    return out


def clustered_boxes(n: int, num_objects: int | None = None, size: float = 1000.0, seed: int = 0):
    """Detector-like boxes: jittered copies around ``num_objects`` objects, with random scores."""
    g = torch.Generator().manual_seed(seed)
    num_objects = num_objects or max(1, n // 50)
    centres = torch.rand(num_objects, 2, generator=g) * size
    wh = torch.rand(num_objects, 2, generator=g) * 0.15 * size + 8
    k = torch.randint(0, num_objects, (n,), generator=g)
    jitter = torch.randn(n, 4, generator=g) * 0.1
    cx = centres[k, 0] + jitter[:, 0] * wh[k, 0]
    cy = centres[k, 1] + jitter[:, 1] * wh[k, 1]
    w = wh[k, 0] * (1 + jitter[:, 2]).clamp(min=0.3)
    h = wh[k, 1] * (1 + jitter[:, 3]).clamp(min=0.3)
    boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)
    return boxes, torch.rand(n, generator=g)


def random_boxes(n: int, size: float = 100.0, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 4
    return torch.cat([xy, xy + wh], dim=1).to(dtype)


def _py_atan_ratio(w: float, h: float) -> float:
    # atan(w / h) as IEEE float division gives it (w / +-0 = +-inf, atan(+-inf) = +-pi/2), with 0/0 -> 0
    if h == 0:
        return 0.0 if w == 0 else math.copysign(math.pi / 2, w) * math.copysign(1.0, h)
    return math.atan(w / h)


def py_pairwise(kind: str, boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """IoU / GIoU / DIoU / CIoU ``[N, M]`` in plain Python, with cvkit's documented no-NaN values.

    Where torchvision divides 0 by 0: IoU 0 (zero union), no GIoU penalty (zero enclosing area), no DIoU
    penalty (zero diagonal and ``eps = 0``), ``atan(0 / 0) = 0`` and CIoU ``alpha = 0`` (zero denominator).
    float32 boxes are computed in float32 (numpy scalars, torchvision's order of operations), others in
    float64; returns float64.
    """
    scalar = np.float32 if boxes1.dtype == torch.float32 else np.float64
    rows1 = [[scalar(v) for v in r] for r in boxes1.tolist()]
    rows2 = [[scalar(v) for v in r] for r in boxes2.tolist()]
    out = []
    for a in rows1:
        row = []
        for b in rows2:
            iou = py_iou(a, b)
            if kind == "iou":
                row.append(iou)
                continue
            union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
            union -= max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            ew = max(0.0, max(a[2], b[2]) - min(a[0], b[0]))
            eh = max(0.0, max(a[3], b[3]) - min(a[1], b[1]))
            if kind == "giou":
                enclose = ew * eh
                row.append(iou - (enclose - union) / enclose if enclose > 0 else iou)
                continue
            diag = ew * ew + eh * eh + eps
            dx = (a[0] + a[2]) / 2 - (b[0] + b[2]) / 2
            dy = (a[1] + a[3]) / 2 - (b[1] + b[3]) / 2
            diou = iou - (dx * dx + dy * dy) / diag if diag > 0 else iou
            if kind == "diou":
                row.append(diou)
                continue
            d = scalar(_py_atan_ratio(a[2] - a[0], a[3] - a[1])) - scalar(_py_atan_ratio(b[2] - b[0], b[3] - b[1]))
            v = scalar(4 / math.pi**2) * d * d
            den = 1 - iou + v + eps
            row.append(diou - (v / den if den > 0 else 0.0) * v)
        out.append(row)
    return torch.tensor(np.array(out, dtype=np.float64)).reshape(boxes1.shape[0], boxes2.shape[0])
