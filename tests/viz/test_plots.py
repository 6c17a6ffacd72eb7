"""PNG training curves: which files appear, that they are real images of the expected size, and the panel
structure of metrics.png (titles, one colour per curve, integer epoch ticks) read from the figure, not pixels."""

from __future__ import annotations

import math

import cv2
import numpy as np
from matplotlib.colors import to_rgba

from cvkit.evaluation.coco import COCO_METRICS
from cvkit.viz.plots import curves_figure, metric_panels, plot_curves, plot_history


def _history(epochs=5, eval_every=2):
    rows = []
    for e in range(1, epochs + 1):
        row = {"epoch": e, "loss": 2.0 / e, "loss_box": 1.0 / e, "lr": 0.01 * (1 - e / (epochs + 1))}
        if e % eval_every == 0:
            row.update(val_loss=2.5 / e, AP=0.1 * e, AP50=0.15 * e)
        rows.append(row)
    return rows


def test_plot_history_writes_four_pngs(tmp_path):
    written = plot_history(_history(), tmp_path)
    assert [p.name for p in written] == ["losses.png", "metrics.png", "lr.png", "results.png"]
    for path in written[:3]:
        image = cv2.imread(str(path))
        assert image is not None and image.shape == (400, 640, 3)
        assert len(np.unique(image.reshape(-1, 3), axis=0)) > 10  # axes, text and curves, not a blank canvas


def test_figures_without_data_are_not_written(tmp_path):
    written = plot_history([{"epoch": 1, "loss": 1.0, "lr": 0.1}, {"epoch": 2, "loss": 0.5, "lr": 0.1}], tmp_path)
    assert sorted(p.name for p in written) == ["losses.png", "lr.png", "results.png"]
    assert not (tmp_path / "metrics.png").exists()
    assert plot_curves([{"epoch": 1, "AP": math.nan}], ["AP", "missing"], tmp_path / "x.png") is None
    assert not (tmp_path / "x.png").exists()


def test_curves_differ_when_the_data_differ(tmp_path):
    a = plot_curves(_history(), ["loss"], tmp_path / "a.png")
    b = plot_curves([{**r, "loss": 1.0} for r in _history()], ["loss"], tmp_path / "b.png")
    assert a is not None and b is not None
    assert not np.array_equal(cv2.imread(str(a)), cv2.imread(str(b)))


def _detection_history(epochs=13, eval_every=2):
    rows = []
    for e in range(1, epochs + 1):
        row = {"epoch": e, "loss": 8.0 / e, "loss_cls": 5.0 / e, "loss_box": 3.0 / e, "lr": 0.01}
        if e % eval_every == 0 or e == epochs:
            row["val_loss"] = 9.0 / e
            row.update({name: (k + 1) / 20 * (1 - 0.8**e) for k, name in enumerate(COCO_METRICS)})
        rows.append(row)
    return rows


def _names(history):
    return list(dict.fromkeys(k for row in history for k in row))


def _check_axis(ax, labels):
    """The axis has these curves in this order, each its own colour, and only integer epoch ticks."""
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == labels
    assert len({to_rgba(line.get_color()) for line in lines}) == len(lines)
    assert [text.get_text() for text in ax.get_legend().get_texts()] == labels
    ax.figure.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    assert ax.get_xlabel() == "epoch"


def test_detection_metrics_have_an_ap_panel_and_an_ar_panel():
    history = _detection_history()
    fig = curves_figure(history, metric_panels(_names(history)))
    assert fig is not None
    assert [ax.get_title() for ax in fig.axes] == ["box AP, COCO (validation)", "box AR, COCO (validation)"]
    _check_axis(fig.axes[0], ["AP", "AP50", "AP75", "APs", "APm", "APl"])
    _check_axis(fig.axes[1], ["AR1", "AR10", "AR100", "ARs", "ARm", "ARl"])
    for ax in fig.axes:  # the per-size curves (small, medium, large) dashed, the others solid
        assert [line.get_linestyle() for line in ax.get_lines()] == ["-"] * 3 + ["--"] * 3
    assert all("acc" not in ax.get_title() for ax in fig.axes)


def test_classification_metrics_have_an_accuracy_panel():
    history = [{"epoch": e, "loss": 1.0 / e, "acc": 1 - 0.5 / e, "val_loss": 1.2 / e, "val_acc": 0.9,
                "accuracy": 1 - 0.6 / e, "top5": 1 - 0.1 / e, "accuracy_class_mean": 1 - 0.7 / e, "lr": 0.1}
               for e in range(1, 4)]
    fig = curves_figure(history, metric_panels(_names(history)))
    assert fig is not None and [ax.get_title() for ax in fig.axes] == ["classification accuracy (validation)"]
    _check_axis(fig.axes[0], ["acc (training)", "accuracy", "top5", "accuracy_class_mean"])


def test_metrics_png_is_one_panel_wide_per_family(tmp_path):
    written = plot_history(_detection_history(), tmp_path)
    assert [p.name for p in written] == ["losses.png", "metrics.png", "lr.png", "results.png"]
    assert cv2.imread(str(tmp_path / "metrics.png")).shape == (400, 1280, 3)
    assert cv2.imread(str(tmp_path / "losses.png")).shape == (400, 640, 3)
    # a single epoch still gets integer ticks; many curves on one axis still get distinct colours
    fig = curves_figure(_detection_history(epochs=1), metric_panels(COCO_METRICS))
    assert fig is not None
    _check_axis(fig.axes[0], ["AP", "AP50", "AP75", "APs", "APm", "APl"])
    many = [{"epoch": e, **{f"AP{k}": k / 12 + e for k in range(12)}} for e in (1, 2)]
    fig = curves_figure(many, metric_panels(_names(many)))
    assert fig is not None
    _check_axis(fig.axes[0], [f"AP{k}" for k in range(12)])


def test_results_png_is_one_page_of_four_panels(tmp_path):
    from cvkit.viz.plots import results_panels

    history = _detection_history()
    panels = results_panels(_names(history))
    assert [p.title for p in panels] == ["train losses", "validation losses", "box AP / AR, COCO (validation)",
                                         "learning rate (end of epoch)"]
    assert panels[0].keys == ("loss", "loss_cls", "loss_box") and panels[1].keys == ("val_loss",)
    assert panels[2].keys == ("AP", "AP50", "AP75", "AR100")
    fig = curves_figure(history, panels, log_y=True, cols=2)
    assert fig is not None and len(fig.axes) == 4
    assert [ax.get_yscale() for ax in fig.axes] == ["log", "log", "linear", "linear"]
    plot_history(history, tmp_path)
    image = cv2.imread(str(tmp_path / "results.png"))
    assert image.shape == (800, 1280, 3) and len(np.unique(image.reshape(-1, 3), axis=0)) > 10


def test_pr_curves_png(tmp_path):
    from cvkit.viz.plots import plot_pr_curves

    recall = np.linspace(0, 1, 101)
    precision = np.stack([1 - recall**2, np.where(recall < 0.5, 0.8, 0.0), -np.ones(101)])
    path = plot_pr_curves(recall, precision, ["a", "b", "no gt"], tmp_path / "pr.png")
    image = cv2.imread(str(path))
    assert image is not None and len(np.unique(image.reshape(-1, 3), axis=0)) > 10
