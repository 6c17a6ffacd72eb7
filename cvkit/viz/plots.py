"""Training curves as PNG files (matplotlib's Agg canvas: no display, no pyplot global state).

A history is a list of per-epoch rows, each a dict of numbers keyed by name (``epoch``, ``loss``,
``loss_cls``, ``val_loss``, ``AP``, ``lr``, ...), as :func:`cvkit.engine.train.fit` logs them. Missing
values and ``nan`` are left out of a curve (evaluation runs only every N epochs).

A figure is one or more :class:`Panel` s side by side, each an axis of its own; within a panel every curve
has its own colour (tab10), and COCO's per-size curves (``APs``, ``ARm``, ...) are dashed. Epoch ticks are
integers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Panel", "curves_figure", "metric_panels", "plot_curves", "plot_history", "plot_panels", "plot_pr_curves",
           "plot_results", "results_panels"]

PANEL_WIDTH, PANEL_HEIGHT, DPI = 6.4, 4.0, 100  # inches per panel: a 640 x 400 pixel axis each


class Panel(NamedTuple):
    """One axis of a figure: its title, the history keys it plots (in legend order) and its y label."""

    title: str
    keys: tuple[str, ...]
    ylabel: str = ""


# metrics.png, (title, y label, key prefixes): a key goes to the first panel with a prefix it starts with,
# its curves in the order the keys first appear in the history
METRIC_PANELS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("box AP, COCO (validation)", "AP", ("AP",)),  # AP, AP50, AP75, APs, APm, APl
    ("box AR, COCO (validation)", "AR", ("AR",)),  # AR1, AR10, AR100, ARs, ARm, ARl
    ("classification accuracy (validation)", "accuracy", ("acc", "top")),  # acc (training), accuracy, top5, ...
)
# the metrics results.png shows (those the history has), in legend order
RESULTS_METRICS = ("AP", "AP50", "AP75", "AR100", "acc", "accuracy", "accuracy_class_mean")
LEGEND_LABELS = {"acc": "acc (training)"}  # keys whose legend says more than the key itself
SIZE_RANGE_KEYS = frozenset(f"{family}{size}" for family in ("AP", "AR") for size in "sml")  # drawn dashed


def _points(history: Sequence[Mapping[str, float]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i, row in enumerate(history):
        value = row.get(key)
        if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        xs.append(float(row.get("epoch", i + 1)))
        ys.append(float(value))
    return xs, ys


def metric_panels(keys: Iterable[str]) -> list[Panel]:
    """The panels of ``metrics.png`` for these history keys: AP family, AR family, accuracy (empty ones dropped)."""
    grouped: dict[str, list[str]] = {title: [] for title, _, _ in METRIC_PANELS}
    for key in keys:
        title = next((t for t, _, prefixes in METRIC_PANELS if key.startswith(prefixes)), None)
        if title is not None and key not in grouped[title]:
            grouped[title].append(key)
    return [Panel(title, tuple(grouped[title]), ylabel) for title, ylabel, _ in METRIC_PANELS if grouped[title]]


def _colours(count: int) -> list[tuple[float, ...]]:
    from matplotlib import colormaps

    if count <= 10:  # integers index tab10's ten colours; floats sample turbo evenly
        return [tuple(c) for c in colormaps["tab10"](list(range(count)))]
    return [tuple(c) for c in colormaps["turbo"]([i / (count - 1) for i in range(count)])]


def curves_figure(
    history: Sequence[Mapping[str, float]], panels: Sequence[Panel], log_y: bool = False, cols: int | None = None,
    title: str = "",
) -> Figure | None:
    """One axis per panel with a point (side by side, ``cols`` to a row: default all), each curve against the
    epoch; None when no panel has one. ``log_y`` applies to panels whose keys all contain ``loss``, or to every
    panel when ``cols`` is None."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    drawn = []
    for panel in panels:
        series = [(key, *_points(history, key)) for key in panel.keys]
        series = [s for s in series if s[1]]
        if series:
            drawn.append((panel, series))
    if not drawn:
        return None
    num_cols = len(drawn) if cols is None else max(1, min(cols, len(drawn)))
    num_rows = math.ceil(len(drawn) / num_cols)
    fig = Figure(figsize=(PANEL_WIDTH * num_cols, PANEL_HEIGHT * num_rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    if title:
        fig.suptitle(title)
    for index, (panel, series) in enumerate(drawn):
        ax = fig.add_subplot(num_rows, num_cols, index + 1)
        for (key, xs, ys), colour in zip(series, _colours(len(series))):
            ax.plot(xs, ys, color=colour, linestyle="--" if key in SIZE_RANGE_KEYS else "-",
                    marker="o" if len(xs) < 30 else None, markersize=3, label=LEGEND_LABELS.get(key, key))
        panel_log = log_y and (cols is None or all("loss" in key for key, _, _ in series))
        if panel_log and all(y > 0 for _, _, ys in series for y in ys):
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # one epoch: one tick, "1"
        ax.set_xlabel("epoch")
        ax.set_ylabel(panel.ylabel)
        ax.set_title(panel.title)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize="small", ncol=2 if len(series) > 4 else 1)
    return fig


def _save_png(fig: Any, path: str | os.PathLike) -> Path | None:
    """Save ``fig`` as the PNG ``path`` (its folder made); None when there is no figure."""
    if fig is None:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def plot_panels(
    history: Sequence[Mapping[str, float]], panels: Sequence[Panel], path: str | os.PathLike, log_y: bool = False
) -> Path | None:
    """Write :func:`curves_figure` to the PNG ``path``; None (no file) when no panel has a point."""
    return _save_png(curves_figure(history, panels, log_y=log_y), path)


def plot_curves(
    history: Sequence[Mapping[str, float]],
    keys: Iterable[str],
    path: str | os.PathLike,
    title: str = "",
    ylabel: str = "",
    log_y: bool = False,
) -> Path | None:
    """Plot ``keys`` of ``history`` against the epoch into the PNG ``path``; None (no file) when no key has a point."""
    return plot_panels(history, [Panel(title, tuple(keys), ylabel)], path, log_y=log_y)


def results_panels(keys: Sequence[str]) -> list[Panel]:
    """The panels of ``results.png``: train loss terms, validation loss terms, the headline validation metrics
    (:data:`RESULTS_METRICS`: AP, AP50, AP75, AR100 / accuracy ...), lr."""
    train = tuple(k for k in keys if k.startswith("loss"))
    val = tuple(k for k in keys if k.startswith("val_") and "loss" in k)
    metrics = tuple(k for k in RESULTS_METRICS if k in keys)
    title = "box AP / AR, COCO (validation)" if any(k.startswith(("AP", "AR")) for k in metrics) else "validation"
    return [Panel("train losses", train, "loss"), Panel("validation losses", val, "loss"),
            Panel(title, metrics, ""), Panel("learning rate (end of epoch)", ("lr",) if "lr" in keys else (), "lr")]


def plot_results(history: Sequence[Mapping[str, float]], path: str | os.PathLike) -> Path | None:
    """Write ``results.png``: every :func:`results_panels` panel with a point on one page, two to a row
    (losses on a log scale); None (no file) when there is nothing to plot."""
    names: list[str] = []
    for row in history:
        names.extend(k for k in row if k not in names)
    return _save_png(curves_figure(history, results_panels(names), log_y=True, cols=2, title="results"), path)


def plot_history(history: Sequence[Mapping[str, float]], out_dir: str | os.PathLike) -> list[Path]:
    """Write ``losses.png`` (train and val loss terms), ``metrics.png``, ``lr.png`` and ``results.png``.

    Keys are grouped by name: containing ``loss`` -> losses; ``metrics.png`` has a panel per metric family
    (:func:`metric_panels`: AP*, AR*, acc*/top*); ``lr`` -> lr; ``results.png`` is all of it on one page
    (:func:`plot_results`). A figure with nothing to show is not written. Returns the written paths.
    """
    names: list[str] = []
    for row in history:
        names.extend(k for k in row if k not in names)
    losses = [k for k in names if "loss" in k]
    out_dir = Path(out_dir)
    written = [
        plot_curves(history, losses, out_dir / "losses.png", "losses", "loss", log_y=True),
        plot_panels(history, metric_panels(names), out_dir / "metrics.png"),
        plot_curves(history, ["lr"], out_dir / "lr.png", "learning rate (end of epoch)", "lr"),
        plot_results(history, out_dir / "results.png"),
    ]
    return [p for p in written if p is not None]


def plot_pr_curves(
    recall: Sequence[float], precision: Sequence[Sequence[float]], class_names: Sequence[str],
    path: str | os.PathLike, title: str = "precision-recall",
) -> Path:
    """Write per-class precision-recall curves to the PNG ``path``: ``precision [C, R]`` at the ``recall [R]``
    points (e.g. :attr:`cvkit.evaluation.coco.CocoEvaluator.pr_curves`); a class whose row is all negative
    (no ground truth) is left out; the legend gives each class's mean precision over the recall points (its AP
    at that IoU when the points are COCO's). Returns the path."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    recall_np = np.asarray(recall, np.float64).reshape(-1)
    precision_np = np.asarray(precision, np.float64).reshape(len(class_names), len(recall_np))
    fig = Figure(figsize=(PANEL_WIDTH + (2.0 if len(class_names) > 10 else 0.0), PANEL_HEIGHT * 1.25), dpi=DPI,
                 layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    shown = [k for k in range(len(class_names)) if (precision_np[k] > -1).any()]
    for k, colour in zip(shown, _colours(len(shown))):
        ap = float(precision_np[k].mean())
        ax.plot(recall_np, precision_np[k], color=colour, label=f"{class_names[k]} ({ap:.3f})")
    if shown:
        mean = precision_np[shown].mean(axis=0)
        ax.plot(recall_np, mean, color="black", linewidth=2.5, label=f"all classes ({float(mean.mean()):.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right" if len(shown) <= 10 else "center left", fontsize="small",
              bbox_to_anchor=None if len(shown) <= 10 else (1.02, 0.5), ncol=1 if len(shown) <= 20 else 2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
