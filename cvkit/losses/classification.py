"""Classification criterion: ``criterion(logits, labels) -> {"loss": cross-entropy}``.

Shapes: ``logits`` float (B, C), ``labels`` int64 (B,) in ``0..C-1``; the loss is the batch mean.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["ClassificationLoss"]


class ClassificationLoss(nn.Module):
    """Mean cross-entropy with optional label smoothing (``F.cross_entropy``'s definition)."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: Tensor, labels: Tensor) -> dict[str, Tensor]:
        loss = F.cross_entropy(logits.float(), labels.to(torch.int64), label_smoothing=self.label_smoothing)
        return {"loss": loss}
