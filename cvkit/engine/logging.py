"""Run-folder logging: the per-epoch console table, ``metrics.csv``, TensorBoard, PNG curves, run info.

A run folder (``fit``'s ``run_dir``) ends up with::

    config.yaml         the resolved config (what the caller passed as extra_state["config"], else train:)
    environment.json    python, platform, package versions, devices, the command line, and under ``model`` the
                        model summary (layers, parameters, FLOPs, anchors: cvkit.engine.summary)
    metrics.csv         one row per epoch (every logged key; empty cells where a value is missing)
    losses.png, metrics.png, lr.png   curves (cvkit.viz.plots)
    results.png         all of them on one page: train losses, val losses, AP / AR, lr
    tensorboard/        event files, when the tensorboard package is installed (else one warning per process):
                        the scalars of every row, and the pictures a task's evaluation hook adds (add_image)
    checkpoints/        last.pt, best.pt (cvkit.engine.checkpoint)
    eval_report.txt     the evaluator's last per-class report, when it has one

Only the main process (rank 0) writes; :class:`RunLogger` built with ``enabled=False`` does nothing.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
import math
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import yaml

__all__ = ["RunLogger", "environment_info", "save_run_info", "format_table_row", "write_text_atomic"]

log = logging.getLogger("cvkit.engine")

PACKAGES = ("torch", "torchvision", "numpy", "pycocotools", "opencv-python-headless", "albumentations", "numba")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file and ``os.replace`` (readers never see half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@functools.cache
def _warn_no_tensorboard() -> None:
    """Say once per process (not per logger, nor per k-fold fold) that TensorBoard logging is off."""
    log.warning("train.tensorboard is true but the tensorboard package is not installed: no TensorBoard event "
                "files (pip install tensorboard, or set train.tensorboard: false)")


def environment_info() -> dict[str, Any]:
    """Versions and devices of this process (JSON-able)."""
    import cvkit

    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    cuda = torch.cuda.is_available()
    return {
        "cvkit": cvkit.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else ["cpu"],
        "cpu_threads": torch.get_num_threads(),
        "argv": list(sys.argv),
    }


def save_run_info(run_dir: str | os.PathLike, config: Mapping[str, Any],
                  model: Mapping[str, Any] | None = None) -> None:
    """Write ``config.yaml`` (``config`` as YAML) and ``environment.json`` into ``run_dir``; ``model`` (a
    :func:`cvkit.engine.summary.model_summary`) goes into environment.json under ``model``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(_plain(config), sort_keys=False))
    info = environment_info()
    if model is not None:
        info["model"] = _plain(model)
    write_text_atomic(run_dir / "environment.json", json.dumps(info, indent=2) + "\n")


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return value


def _format_value(key: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if key == "epoch":
        return str(int(value))
    if key == "lr":
        return f"{value:.3e}"
    if key == "time":
        return f"{value:.1f}s"
    return f"{value:.4f}"


def table_columns(row: Mapping[str, Any], metrics: Sequence[str] = ("val_loss", "AP", "AP50")) -> list[str]:
    """Console columns for a row: epoch, the train loss terms (and ``acc``, a classifier's training accuracy),
    ``metrics`` (validation), lr, time."""
    losses = [k for k in row if k.startswith("loss") or k == "acc"]
    return ["epoch", *losses, *metrics, "lr", "time"]


def format_table_row(row: Mapping[str, Any], columns: list[str]) -> str:
    return " ".join(f"{_format_value(k, row.get(k)):>{max(len(k), 10)}}" for k in columns)


class RunLogger:
    """Collect per-epoch rows; print the table, rewrite ``metrics.csv`` and the curves, feed TensorBoard."""

    def __init__(
        self,
        run_dir: str | os.PathLike,
        enabled: bool = True,
        console_table: bool = True,
        tensorboard: bool = True,
        plots: bool = True,
        metrics: Sequence[str] = ("val_loss", "AP", "AP50"),
        history: list[dict[str, float]] | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.console_table = console_table and enabled
        self.plots = plots and enabled
        self.metrics = list(metrics)
        self.history: list[dict[str, float]] = [dict(r) for r in history or []]
        self._columns: list[str] | None = None
        self.writer = None
        if enabled:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                _warn_no_tensorboard()
                self.writer = None
            else:
                self.writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))

    def print(self, text: str) -> None:
        """Print on the main process (through tqdm, so progress bars stay intact)."""
        if self.enabled:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stdout)

    def log_epoch(self, row: Mapping[str, float]) -> None:
        """Record one epoch's row and refresh every output."""
        row = {k: float(v) for k, v in row.items()}
        self.history.append(row)
        if not self.enabled:
            return
        if self.console_table:
            columns = table_columns(row, self.metrics)
            if columns != self._columns:
                self._columns = columns
                self.print(" ".join(f"{k:>{max(len(k), 10)}}" for k in columns))
            self.print(format_table_row(row, columns))
        self.write_csv()
        if self.writer is not None:
            step = int(row.get("epoch", len(self.history)))
            for key, value in row.items():
                if key != "epoch" and math.isfinite(value):
                    self.writer.add_scalar(key, value, step)
            self.writer.flush()
        if self.plots:
            from cvkit.viz.plots import plot_history

            plot_history(self.history, self.run_dir)

    def add_image(self, tag: str, image: Any, step: int) -> None:
        """Add an RGB uint8 ``(H, W, 3)`` image to TensorBoard at ``step`` (nothing without a writer)."""
        if self.writer is not None:
            self.writer.add_image(tag, image, step, dataformats="HWC")
            self.writer.flush()

    def write_csv(self) -> Path:
        """Rewrite ``metrics.csv`` from the whole history (resumed runs keep one consistent file)."""
        keys: list[str] = []
        for row in self.history:
            keys.extend(k for k in row if k not in keys)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys, restval="", lineterminator="\n")
        writer.writeheader()
        for row in self.history:
            writer.writerow({k: ("" if math.isnan(v) else repr(v)) for k, v in row.items()})
        path = self.run_dir / "metrics.csv"
        write_text_atomic(path, buffer.getvalue())
        return path

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
