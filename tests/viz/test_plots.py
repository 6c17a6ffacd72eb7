"""PNG training curves: which files appear, and that they are real images of the expected size."""

from __future__ import annotations

import math

import cv2
import numpy as np

from cvkit.viz.plots import plot_curves, plot_history


def _history(epochs=5, eval_every=2):
    rows = []
    for e in range(1, epochs + 1):
        row = {"epoch": e, "loss": 2.0 / e, "loss_box": 1.0 / e, "lr": 0.01 * (1 - e / (epochs + 1))}
        if e % eval_every == 0:
            row.update(val_loss=2.5 / e, AP=0.1 * e, AP50=0.15 * e)
        rows.append(row)
    return rows


def test_plot_history_writes_three_pngs(tmp_path):
    written = plot_history(_history(), tmp_path)
    assert [p.name for p in written] == ["losses.png", "metrics.png", "lr.png"]
    for path in written:
        image = cv2.imread(str(path))
        assert image is not None and image.shape == (400, 640, 3)
        assert len(np.unique(image.reshape(-1, 3), axis=0)) > 10  # axes, text and curves, not a blank canvas


def test_figures_without_data_are_not_written(tmp_path):
    written = plot_history([{"epoch": 1, "loss": 1.0, "lr": 0.1}, {"epoch": 2, "loss": 0.5, "lr": 0.1}], tmp_path)
    assert sorted(p.name for p in written) == ["losses.png", "lr.png"]
    assert not (tmp_path / "metrics.png").exists()
    assert plot_curves([{"epoch": 1, "AP": math.nan}], ["AP", "missing"], tmp_path / "x.png") is None
    assert not (tmp_path / "x.png").exists()


def test_curves_differ_when_the_data_differ(tmp_path):
    a = plot_curves(_history(), ["loss"], tmp_path / "a.png")
    b = plot_curves([{**r, "loss": 1.0} for r in _history()], ["loss"], tmp_path / "b.png")
    assert a is not None and b is not None
    assert not np.array_equal(cv2.imread(str(a)), cv2.imread(str(b)))
