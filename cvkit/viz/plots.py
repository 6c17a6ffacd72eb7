"""Training curves as PNG files (matplotlib's Agg canvas: no display, no pyplot global state).

A history is a list of per-epoch rows, each a dict of numbers keyed by name (``epoch``, ``loss``,
``loss_cls``, ``val_loss``, ``AP``, ``lr``, ...), as :func:`cvkit.engine.train.fit` logs them. Missing
values and ``nan`` are left out of a curve (evaluation runs only every N epochs).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

__all__ = ["plot_curves", "plot_history"]

METRIC_PREFIXES = ("AP", "AR", "top", "acc")


def _points(history: Sequence[Mapping[str, float]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i, row in enumerate(history):
        value = row.get(key)
        if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        xs.append(float(row.get("epoch", i + 1)))
        ys.append(float(value))
    return xs, ys


def plot_curves(
    history: Sequence[Mapping[str, float]],
    keys: Iterable[str],
    path: str | os.PathLike,
    title: str = "",
    ylabel: str = "",
    log_y: bool = False,
) -> Path | None:
    """Plot ``keys`` of ``history`` against the epoch into the PNG ``path``; None (no file) when no key has a point."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = [(key, *_points(history, key)) for key in keys]
    series = [s for s in series if s[1]]
    if not series:
        return None
    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.12, top=0.92)
    for key, xs, ys in series:
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=key)
    if log_y and all(y > 0 for _, _, ys in series for y in ys):
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def plot_history(history: Sequence[Mapping[str, float]], out_dir: str | os.PathLike) -> list[Path]:
    """Write ``losses.png`` (train and val loss terms), ``metrics.png`` (AP/AR-like metrics) and ``lr.png``.

    Keys are grouped by name: containing ``loss`` -> losses; starting with AP, AR, top or acc -> metrics;
    ``lr`` -> lr. A figure with nothing to show is not written. Returns the written paths.
    """
    names: list[str] = []
    for row in history:
        names.extend(k for k in row if k not in names)
    losses = [k for k in names if "loss" in k]
    metrics = [k for k in names if k.startswith(METRIC_PREFIXES)]
    out_dir = Path(out_dir)
    written = [
        plot_curves(history, losses, out_dir / "losses.png", "losses", "loss", log_y=True),
        plot_curves(history, metrics, out_dir / "metrics.png", "metrics (acc: training, others: validation)", "value"),
        plot_curves(history, ["lr"], out_dir / "lr.png", "learning rate (end of epoch)", "lr"),
    ]
    return [p for p in written if p is not None]
