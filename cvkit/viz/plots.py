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
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Panel", "curves_figure", "metric_panels", "plot_curves", "plot_history", "plot_panels"]

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
    history: Sequence[Mapping[str, float]], panels: Sequence[Panel], log_y: bool = False
) -> Figure | None:
    """One axis per panel with a point (side by side), each curve against the epoch; None when no panel has one."""
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
    fig = Figure(figsize=(PANEL_WIDTH * len(drawn), PANEL_HEIGHT), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    for index, (panel, series) in enumerate(drawn):
        ax = fig.add_subplot(1, len(drawn), index + 1)
        for (key, xs, ys), colour in zip(series, _colours(len(series))):
            ax.plot(xs, ys, color=colour, linestyle="--" if key in SIZE_RANGE_KEYS else "-",
                    marker="o" if len(xs) < 30 else None, markersize=3, label=LEGEND_LABELS.get(key, key))
        if log_y and all(y > 0 for _, _, ys in series for y in ys):
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # one epoch: one tick, "1"
        ax.set_xlabel("epoch")
        ax.set_ylabel(panel.ylabel)
        ax.set_title(panel.title)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize="small", ncol=2 if len(series) > 4 else 1)
    return fig


def plot_panels(
    history: Sequence[Mapping[str, float]], panels: Sequence[Panel], path: str | os.PathLike, log_y: bool = False
) -> Path | None:
    """Write :func:`curves_figure` to the PNG ``path``; None (no file) when no panel has a point."""
    fig = curves_figure(history, panels, log_y=log_y)
    if fig is None:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


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


def plot_history(history: Sequence[Mapping[str, float]], out_dir: str | os.PathLike) -> list[Path]:
    """Write ``losses.png`` (train and val loss terms), ``metrics.png`` and ``lr.png``.

    Keys are grouped by name: containing ``loss`` -> losses; ``metrics.png`` has a panel per metric family
    (:func:`metric_panels`: AP*, AR*, acc*/top*); ``lr`` -> lr. A figure with nothing to show is not
    written. Returns the written paths.
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
    ]
    return [p for p in written if p is not None]
