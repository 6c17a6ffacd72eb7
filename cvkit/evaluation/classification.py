"""Classification metrics: top-1 / top-k accuracy, per-class accuracy and the confusion matrix.

Predictions are the model's logits (or any scores) float (B, C) per batch, labels ``batch["labels"]``
int64 (B,) in ``0..C-1``::

    evaluator = ClassificationEvaluator(class_names, topk=5)
    for batch in val_loader:
        evaluator.update(model(batch["images"]), batch)  # uint8 images: the model normalizes them
    metrics = evaluator.compute()   # {"accuracy": ..., "top5": ..., "accuracy_class_mean": ...}
    print(evaluator.report())       # per-class table and the confusion matrix

Definitions (N samples seen since :meth:`reset`):

- ``accuracy`` (top-1) = #{argmax(scores) == label} / N. Ties go to the lower class index (``argmax``).
- ``top<k>`` = #{label among the k highest scores} / N, with k = min(topk, C) (so ``top5`` is 1 for C <= 5).
- ``confusion[t, p]`` = number of samples of true class t predicted as p; rows sum to the class counts,
  ``trace(confusion) / N == accuracy``.
- per-class accuracy (recall) of class c = confusion[c, c] / sum(confusion[c]) (``nan`` when c has no sample);
  ``accuracy_class_mean`` = the mean over classes that have samples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["ClassificationEvaluator", "topk_correct", "confusion_matrix", "format_confusion"]


def topk_correct(scores: Tensor, labels: Tensor, k: int) -> Tensor:
    """bool (B,): whether ``labels[i]`` is among the ``min(k, C)`` highest ``scores[i]`` (scores (B, C))."""
    k = min(int(k), scores.shape[1])
    top = scores.topk(k, dim=1).indices  # (B, k)
    return (top == labels.reshape(-1, 1)).any(dim=1)


def confusion_matrix(pred_labels: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """int64 (C, C): ``[t, p]`` counts samples of true class t predicted as p."""
    index = labels.to(torch.int64) * num_classes + pred_labels.to(torch.int64)
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


class ClassificationEvaluator:
    """Accumulate top-1/top-k hits and the confusion matrix over batches (see the module docstring)."""

    def __init__(self, class_names: Sequence[str], topk: int = 5):
        self.class_names = tuple(class_names)
        self.num_classes = len(self.class_names)
        if self.num_classes < 1:
            raise ValueError("ClassificationEvaluator needs at least one class")
        self.topk = int(topk)
        self.topk_name = f"top{self.topk}"
        self.table_metrics = ("accuracy", self.topk_name)  # the metrics fit's console table shows
        self.per_class: list[dict[str, Any]] = []
        self.reset()

    def reset(self) -> None:
        """Forget the predictions seen so far."""
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        self.num_samples = 0
        self.num_topk = 0

    def update(self, scores: Tensor, batch: Mapping[str, Any] | Tensor) -> None:
        """Add one batch: ``scores`` (B, C), labels from ``batch["labels"]`` (or ``batch`` itself, a tensor)."""
        labels = batch if isinstance(batch, Tensor) else batch["labels"]
        scores = scores.detach().float().cpu()
        labels = torch.as_tensor(labels).detach().cpu().to(torch.int64).reshape(-1)
        if scores.ndim != 2 or scores.shape[0] != labels.shape[0] or scores.shape[1] != self.num_classes:
            raise ValueError(f"scores {tuple(scores.shape)} do not match {labels.shape[0]} labels "
                             f"and {self.num_classes} classes")
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"labels outside 0..{self.num_classes - 1}")
        self.confusion += confusion_matrix(scores.argmax(dim=1), labels, self.num_classes)
        self.num_topk += int(topk_correct(scores, labels, self.topk).sum())
        self.num_samples += int(labels.numel())

    def compute(self) -> dict[str, float]:
        """``accuracy``, ``top<k>``, ``accuracy_class_mean`` over the samples seen; fills :attr:`per_class`."""
        if self.num_samples == 0:
            raise RuntimeError("ClassificationEvaluator.compute() before any update(): no samples")
        counts = self.confusion.sum(dim=1)
        correct = self.confusion.diagonal()
        self.per_class = [
            {"label": c, "name": name, "num_samples": int(counts[c]),
             "accuracy": float(correct[c]) / int(counts[c]) if counts[c] else math.nan}
            for c, name in enumerate(self.class_names)
        ]
        seen = [row["accuracy"] for row in self.per_class if row["num_samples"]]
        return {
            "accuracy": float(correct.sum()) / self.num_samples,
            self.topk_name: self.num_topk / self.num_samples,
            "accuracy_class_mean": sum(seen) / len(seen),
        }

    def report(self) -> str:
        """The per-class accuracy table and the confusion matrix (rows true, columns predicted) as text."""
        if not self.per_class:
            return "(no evaluation yet)"
        width = max(8, *(len(n) for n in self.class_names))
        lines = [f"{'class':<{width}} {'samples':>8} {'accuracy':>9}"]
        for row in self.per_class:
            lines.append(f"{row['name']:<{width}} {row['num_samples']:>8} {row['accuracy']:>9.4f}")
        lines.append("")
        lines.append(format_confusion(self.confusion, self.class_names))
        return "\n".join(lines)


def format_confusion(confusion: Tensor, class_names: Sequence[str]) -> str:
    """The confusion matrix as a text table (rows: true class, columns: predicted class)."""
    names = [str(n) for n in class_names]
    width = max(9, *(len(n) for n in names))
    cell = max(6, len(str(int(confusion.max()))) + 1 if confusion.numel() else 6, *(min(len(n), 10) for n in names))
    corner = "true\\pred"
    header = f"{corner:<{width}} " + " ".join(f"{n[:10]:>{cell}}" for n in names)
    rows = [header]
    for name, row in zip(names, confusion.tolist()):
        rows.append(f"{name:<{width}} " + " ".join(f"{v:>{cell}}" for v in row))
    return "\n".join(rows)
