"""Slow pure-Python references and box generators shared by the ops tests (a third opinion)."""

from __future__ import annotations

import math

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
