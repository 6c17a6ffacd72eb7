"""Classification criterion: ``criterion(logits, labels) -> {"loss": cross-entropy, "acc": accuracy}``.

Shapes: ``logits`` float (B, C), ``labels`` int64 (B,) in ``0..C-1``; both terms are batch means. ``acc``
(top-1, no gradient) is logged, not optimized: the training rows get the training accuracy (on augmented
images, as the d2l plots show it), the validation rows ``val_acc`` beside the evaluator's ``accuracy``.
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
        labels = labels.to(torch.int64)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        with torch.no_grad():
            acc = (logits.argmax(dim=1) == labels).float().mean() if labels.numel() else loss.new_zeros(())
        return {"loss": loss, "acc": acc}
