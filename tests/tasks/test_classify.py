"""The classification run on the engine: short training on the built-in shapes, run-folder outputs, k-fold."""

import dataclasses
import json

import numpy as np
import pytest

from cvkit.config import ConfigError
from cvkit.data.config import DataConfig
from cvkit.data.synthetic import SyntheticConfig
from cvkit.engine.checkpoint import load_checkpoint
from cvkit.engine.config import TrainConfig
from cvkit.models.classification import ClassifierConfig
from cvkit.run_config import RunConfig
from cvkit.tasks.classify import kfold_splits, load_classify_config, run
from cvkit.transforms.config import TransformsConfig


def _cfg(tmp_path, num_train=1000, num_val=100, epochs=4, classes=("circle", "cross"), batch_size=16):
    synthetic = SyntheticConfig(num_train=num_train, num_val=num_val, classes=classes, cls_image_size=32)
    return RunConfig(
        task="classify",
        data=DataConfig(format="synthetic_cls", cache_dir=str(tmp_path / "cache"), batch_size=batch_size, num_workers=0,
                        synthetic=synthetic),
        transforms=TransformsConfig(train_preset="cls_train", eval_preset="cls_eval", size=(32, 32),
                                    cls_scale=(0.6, 1.0), cls_jitter=0.0, cls_resize_ratio=1.0),
        train=TrainConfig(epochs=epochs, optimizer="adamw", lr=0.005, weight_decay=0.01, warmup_epochs=0.5,
                          monitor="accuracy", progress=False, tensorboard=False),
    )


CLASSIFIER = ClassifierConfig(name="resnet_mini", hidden_dim=8)


def test_short_run_beats_chance_and_writes_the_run_folder(tmp_path, one_thread, capsys):
    rows = run(_cfg(tmp_path), tmp_path / "run", classifier=CLASSIFIER)
    assert len(rows) == 4
    assert {"epoch", "loss", "acc", "val_loss", "val_acc", "accuracy", "top5", "accuracy_class_mean", "time"} <= set(
        rows[-1]
    )
    assert all(0.0 <= r["acc"] <= 1.0 for r in rows) and rows[-1]["acc"] > rows[0]["acc"]  # training accuracy
    assert 0.0 <= rows[-1]["val_acc"] <= 1.0  # a mean of batch means: close to the evaluator's "accuracy"
    assert max(r["accuracy"] for r in rows) >= 0.65  # 2 classes, 100 val images: chance is 0.5 (sd 0.05)
    out = capsys.readouterr().out
    assert "accuracy" in out and "true\\pred" in out  # console table, then the report with the confusion matrix
    assert "epoch       loss        acc   val_loss   accuracy" in out  # training accuracy in the table
    run_dir = tmp_path / "run"
    for name in ("metrics.csv", "losses.png", "metrics.png", "confusion.png", "eval_report.txt",
                 "checkpoints/last.pt", "checkpoints/best.pt", "config.yaml"):
        assert (run_dir / name).is_file(), name
    assert "accuracy" in (run_dir / "metrics.csv").read_text().splitlines()[0]
    extra = load_checkpoint(run_dir / "checkpoints" / "last.pt")["extra"]
    assert extra["task"] == "classify" and extra["class_names"] == ["circle", "cross"]
    assert extra["preprocess"]["size"] == [32, 32] and extra["config"]["classifier"]["name"] == "resnet_mini"

    # `cvkit eval` rebuilds model, data and preprocessing from the checkpoint alone and gets the run's numbers
    from cvkit.cli.main import main as cvkit

    assert cvkit(["eval", "--checkpoint", str(run_dir / "checkpoints" / "last.pt"), "--out", str(tmp_path / "ev")]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["accuracy"] == rows[-1]["accuracy"] and metrics["top5"] == rows[-1]["top5"]
    assert metrics["val_loss"] == pytest.approx(rows[-1]["val_loss"], rel=1e-5)
    assert (tmp_path / "ev" / "confusion.png").is_file()
    assert "true\\pred" in capsys.readouterr().out


def test_kfold_reports_every_fold_and_mean_std(tmp_path, one_thread, capsys):
    cfg = _cfg(tmp_path, num_train=60, num_val=10, epochs=1, classes=("circle", "square", "star"))
    folds = run(cfg, tmp_path / "kf", kfold=3, classifier=CLASSIFIER)
    assert [f["fold"] for f in folds] == [1.0, 2.0, 3.0]
    assert all(0.0 <= f["accuracy"] <= 1.0 for f in folds)
    summary = json.loads((tmp_path / "kf" / "kfold.json").read_text())
    assert summary["accuracy_mean"] == pytest.approx(np.mean([f["accuracy"] for f in folds]))
    assert summary["accuracy_std"] == pytest.approx(np.std([f["accuracy"] for f in folds], ddof=1))
    assert "mean ± std over 3 folds" in capsys.readouterr().out
    assert all((tmp_path / "kf" / f"fold{i}" / "metrics.csv").is_file() for i in (1, 2, 3))


def test_kfold_splits_are_disjoint_stratified_and_cover_everything():
    labels = np.repeat([0, 1, 2], [10, 7, 4])
    folds = kfold_splits(labels, 3, seed=0)
    joined = np.concatenate(folds)
    assert sorted(joined.tolist()) == list(range(len(labels)))
    sizes = [len(f) for f in folds]
    assert max(sizes) - min(sizes) <= 1
    for c in range(3):
        counts = [int((labels[f] == c).sum()) for f in folds]
        assert max(counts) - min(counts) <= 1
    assert [f.tolist() for f in kfold_splits(labels, 3, seed=0)] == [f.tolist() for f in folds]
    with pytest.raises(ValueError):
        kfold_splits(labels, 1)


def test_config_errors_name_the_key(tmp_path):
    cfg = _cfg(tmp_path)
    with pytest.raises(ConfigError, match="transforms.train_preset"):
        run(dataclasses.replace(cfg, transforms=TransformsConfig(size=(32, 32))), tmp_path, classifier=CLASSIFIER)
    with pytest.raises(ConfigError, match="train.monitor='AP'"):
        run(dataclasses.replace(cfg, train=TrainConfig()), tmp_path, classifier=CLASSIFIER)


def test_default_config_loads():
    cfg, classifier = load_classify_config("configs/classify_default.yaml", ["train.epochs=2"])
    assert cfg.task == "classify" and cfg.train.epochs == 2 and cfg.train.monitor == "accuracy"
    assert cfg.transforms.train_preset == "cls_train" and classifier.name


def test_infer_classify_writes_topk_json_and_drawn_images(tmp_path, one_thread):
    from cvkit.cli.infer_classify import main

    cfg = _cfg(tmp_path, num_train=40, num_val=6, epochs=1)
    run(cfg, tmp_path / "run", classifier=CLASSIFIER)
    images = sorted((tmp_path / "cache").rglob("val/*/*.jpg"))[:3]
    out = tmp_path / "pred"
    argv = ["--checkpoint", str(tmp_path / "run" / "checkpoints" / "last.pt"), "--out", str(out), "--topk", "2"]
    assert main([*argv, *map(str, images)]) == 0
    results = json.loads((out / "predictions.json").read_text())
    assert [r["file"] for r in results] == [str(p) for p in images]
    for r in results:
        assert [p["name"] for p in r["topk"]] and len(r["topk"]) == 2
        assert r["topk"][0]["score"] >= r["topk"][1]["score"]
        assert sum(p["score"] for p in r["topk"]) == pytest.approx(1.0, abs=1e-5)  # 2 classes: all of them
    assert all((out / f"{p.stem}.jpg").is_file() for p in images)
    # `cvkit infer` (the detection command) hands a classification checkpoint over to the same code
    from cvkit.cli.main import main as cvkit

    routed = tmp_path / "routed"
    argv = ["infer", "--checkpoint", str(tmp_path / "run" / "checkpoints" / "last.pt"), "--out", str(routed),
            "--topk", "2", "--score-thresh", "0.3", *map(str, images)]
    assert cvkit(argv) == 0
    assert json.loads((routed / "predictions.json").read_text()) == results
