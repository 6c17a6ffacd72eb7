"""From the CLI: a tiny `cvkit train` run writes the model summary, the evaluation pictures, results.png and
TensorBoard event files (read back with tensorboard's EventAccumulator); `cvkit eval --out` writes the same
pictures for its checkpoint."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

from cvkit.cli.main import main as cvkit

PICTURES = ("val_predictions.png", "pr_curve.png", "confusion_matrix.png")


def tiny_train_args(tmp_path, tensorboard: bool = True) -> list[str]:
    """The default recipe shrunk to a 128x128 synthetic set and a narrow network (seconds on one core)."""
    sets = [
        "data.synthetic.num_train=4", "data.synthetic.num_val=3", "data.synthetic.image_size=128",
        "data.synthetic.max_object_size=64", f"data.cache_dir={tmp_path / 'cache'}", "data.batch_size=4",
        "data.num_workers=0", "train.epochs=2", "train.eval_every=1", "train.progress=false",
        f"train.tensorboard={str(tensorboard).lower()}", "transforms.size=[128,128]", "anchors.image_size=[128,128]",
        "model.backbone_width=0.25", "model.neck_channels=16",
    ]
    return ["train", "configs/default.yaml", "--run-dir", str(tmp_path / "run"),
            *[arg for item in sets for arg in ("--set", item)]]


def picture(path) -> np.ndarray:
    """The PNG at ``path``, checked to be a real picture (not blank)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 100, path
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 20, f"{path} is (nearly) blank"
    return image


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("pictures")
    assert cvkit(tiny_train_args(tmp_path)) == 0
    return tmp_path / "run"


def test_train_writes_the_summary_and_the_pictures(tiny_run, capsys):
    environment = json.loads((tiny_run / "environment.json").read_text())
    model = environment["model"]
    assert model["name"] == "DenseDetector" and model["input_size"] == [128, 128]
    assert 0 < model["trainable_parameters"] <= model["parameters"] and model["layers"] > 10
    assert model["flops"] > 2 * model["parameters"]  # convolutions reuse each weight at many positions
    assert model["anchors"] > 0 and sum(model["layer_types"].values()) == model["layers"]
    for name in (*PICTURES, "val_predictions_epoch001.png", "val_predictions_epoch002.png", "results.png"):
        picture(tiny_run / name)
    latest = (tiny_run / "val_predictions.png").read_bytes()
    assert latest == (tiny_run / "val_predictions_epoch002.png").read_bytes()
    grid = picture(tiny_run / "val_predictions.png")
    assert grid.shape[1] > 2 * 256  # ground truth beside predictions


def test_tensorboard_event_files_hold_scalars_and_pictures(tiny_run):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = event_accumulator.EventAccumulator(str(tiny_run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"loss", "val_loss", "AP", "AP50", "lr"} <= set(tags["scalars"])
    assert {"val_predictions", "pr_curve", "confusion_matrix"} <= set(tags["images"])
    with open(tiny_run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    logged = [(e.step, e.value) for e in events.Scalars("loss")]
    assert logged == [(int(float(r["epoch"])), pytest.approx(float(r["loss"]), rel=1e-6)) for r in rows]
    grids = events.Images("val_predictions")
    assert [g.step for g in grids] == [1, 2]
    on_disk = cv2.imread(str(tiny_run / "val_predictions.png"))
    decoded = cv2.imdecode(np.frombuffer(grids[-1].encoded_image_string, np.uint8), cv2.IMREAD_COLOR)
    assert (grids[-1].height, grids[-1].width) == on_disk.shape[:2]
    assert np.array_equal(decoded, on_disk)  # the same picture as the run folder's


def test_eval_writes_the_pictures_for_a_checkpoint(tiny_run, tmp_path, capsys):
    out = tmp_path / "eval"
    assert cvkit(["eval", "--checkpoint", str(tiny_run / "checkpoints" / "last.pt"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in PICTURES:
        picture(out / name)
        assert name in printed
    # the checkpoint's weights are the run's last evaluated weights: the same grid as the run's latest
    evaluated = cv2.imread(str(out / "val_predictions.png"))
    assert np.array_equal(evaluated, cv2.imread(str(tiny_run / "val_predictions.png")))
