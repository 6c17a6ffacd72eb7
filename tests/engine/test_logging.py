"""RunLogger: console table, metrics.csv, TensorBoard scalars (with a stand-in writer), rank-0-only writing."""

from __future__ import annotations

import csv
import logging
import math
import sys
import types

from cvkit.engine import logging as run_logging
from cvkit.engine.logging import RunLogger


class FakeWriter:
    instances: list[FakeWriter] = []

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self.scalars: list[tuple[str, float, int]] = []
        self.closed = False
        FakeWriter.instances.append(self)

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        pass

    def close(self):
        self.closed = True


def test_tensorboard_scalars_when_the_package_is_there(tmp_path, monkeypatch):
    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    logger = RunLogger(tmp_path, console_table=False, plots=False)
    logger.log_epoch({"epoch": 1, "loss": 2.0, "AP": math.nan, "lr": 0.1})
    logger.log_epoch({"epoch": 2, "loss": 1.0, "AP": 0.5, "lr": 0.05})
    logger.close()
    writer = FakeWriter.instances[-1]
    assert writer.log_dir == str(tmp_path / "tensorboard") and writer.closed
    assert writer.scalars == [("loss", 2.0, 1), ("lr", 0.1, 1), ("loss", 1.0, 2), ("AP", 0.5, 2), ("lr", 0.05, 2)]


def test_missing_tensorboard_is_said_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import raises ImportError
    run_logging._warn_no_tensorboard.cache_clear()
    with caplog.at_level(logging.WARNING, logger="cvkit.engine"):
        for fold in range(2):  # e.g. two k-fold folds in one process: still one line
            logger = RunLogger(tmp_path / f"fold{fold}", console_table=False, plots=False)
            for epoch in range(1, 4):
                logger.log_epoch({"epoch": epoch, "loss": 1.0 / epoch, "lr": 0.1})
            logger.close()
            assert logger.writer is None
        RunLogger(tmp_path / "off", tensorboard=False, console_table=False, plots=False)
    said = [r for r in caplog.records if "tensorboard" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    assert "pip install tensorboard" in said[0].getMessage() and "train.tensorboard: false" in said[0].getMessage()
    run_logging._warn_no_tensorboard.cache_clear()


def test_csv_keeps_every_column_and_leaves_missing_values_empty(tmp_path, capsys):
    logger = RunLogger(tmp_path, tensorboard=False, plots=False, metrics=["val_loss", "AP"])
    logger.log_epoch({"epoch": 1, "loss": 2.0, "lr": 0.1, "time": 1.5})
    logger.log_epoch({"epoch": 2, "loss": 1.0, "val_loss": 1.2, "AP": 0.25, "lr": 0.05, "time": 1.25})
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "loss", "lr", "time", "val_loss", "AP"]
    assert rows[0]["AP"] == "" and float(rows[1]["AP"]) == 0.25 and float(rows[1]["loss"]) == 1.0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["epoch", "loss", "val_loss", "AP", "lr", "time"]  # printed once
    assert lines[1].split() == ["1", "2.0000", "-", "-", "1.000e-01", "1.5s"]
    assert lines[2].split() == ["2", "1.0000", "1.2000", "0.2500", "5.000e-02", "1.2s"]


def test_a_disabled_logger_writes_and_prints_nothing(tmp_path, capsys):
    logger = RunLogger(tmp_path / "rank1", enabled=False)
    logger.log_epoch({"epoch": 1, "loss": 1.0})
    logger.print("hello")
    assert logger.history == [{"epoch": 1.0, "loss": 1.0}]
    assert not (tmp_path / "rank1").exists() and capsys.readouterr().out == ""
