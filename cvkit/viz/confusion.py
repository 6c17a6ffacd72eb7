"""The confusion matrix as a PNG (matplotlib's Agg canvas: no display, no pyplot global state).

``confusion[t, p]`` counts samples of true class t predicted as p (rows: true, columns: predicted), as
:class:`cvkit.evaluation.classification.ClassificationEvaluator` keeps it. With ``normalize`` the colours
show each row divided by its sum (per-class recall) while the cells print the counts.

The detection matrix (:mod:`cvkit.evaluation.detection_confusion`) is drawn by the same function with one more
name, ``background``, and its own axis labels (``ylabel="ground truth (background: false positive)"``, ...).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_confusion_matrix"]


def plot_confusion_matrix(
    confusion: Any, class_names: Sequence[str], path: str | os.PathLike, normalize: bool = True, title: str = "",
    xlabel: str = "predicted", ylabel: str = "true",
) -> Path:
    """Write the (C, C) ``confusion`` matrix as a heat map with counts to the PNG ``path``; returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(confusion.tolist() if hasattr(confusion, "tolist") else confusion, dtype=np.int64)
    num_classes = len(class_names)
    if counts.shape != (num_classes, num_classes):
        raise ValueError(f"confusion matrix {counts.shape} does not match {num_classes} class names")
    rows = counts.sum(axis=1, keepdims=True)
    shown = np.divide(counts, np.maximum(rows, 1)) if normalize else counts.astype(np.float64)
    side = min(4.0 + 0.45 * num_classes, 20.0)
    fig = Figure(figsize=(side + 1.0, side), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else max(float(shown.max()), 1.0))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class" if normalize else "count")
    ax.set_xticks(range(num_classes), labels=[str(n) for n in class_names], rotation=45, ha="right")
    ax.set_yticks(range(num_classes), labels=[str(n) for n in class_names])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"confusion matrix ({int(counts.sum())} samples)")
    if num_classes <= 30:
        limit = 0.5 * (1.0 if normalize else max(float(shown.max()), 1.0))
        for t in range(num_classes):
            for p in range(num_classes):
                color = "white" if shown[t, p] > limit else "black"
                ax.text(p, t, str(counts[t, p]), ha="center", va="center", fontsize="small", color=color)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
