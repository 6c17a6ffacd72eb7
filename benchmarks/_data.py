"""Seeded, detector-like inputs shared by the ops benchmarks."""

from __future__ import annotations

import torch


def clustered_boxes(n: int, num_objects: int = 100, width: float = 1333.0, height: float = 800.0, seed: int = 0):
    """``n`` boxes jittered around ``num_objects`` objects (the shape of a detector's raw output)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(num_objects, 2, generator=g) * torch.tensor([width, height])
    wh = (torch.rand(num_objects, 2, generator=g) * 0.25 + 0.02) * torch.tensor([width, height])
    k = torch.randint(0, num_objects, (n,), generator=g)
    jitter = torch.randn(n, 4, generator=g) * 0.12
    cx = centres[k, 0] + jitter[:, 0] * wh[k, 0]
    cy = centres[k, 1] + jitter[:, 1] * wh[k, 1]
    w = wh[k, 0] * (1 + jitter[:, 2]).clamp(min=0.3)
    h = wh[k, 1] * (1 + jitter[:, 3]).clamp(min=0.3)
    boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)
    # distinct scores: torchvision leaves the order of equal scores unspecified
    scores = torch.randperm(n, generator=g).float() / n
    return boxes, scores
