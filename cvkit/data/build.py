"""Build a dataset from the ``data:`` config section: one plain function, no registry."""

from __future__ import annotations

import logging
from pathlib import Path

from cvkit.data.coco import CocoDetection
from cvkit.data.config import DETECTION_FORMATS, DataConfig
from cvkit.data.dataset import DetectionDataset
from cvkit.data.errors import DataReport
from cvkit.data.image_folder import ImageFolderDataset
from cvkit.data.synthetic import generate_classification, generate_detection
from cvkit.data.voc import VOCDetection
from cvkit.data.yolo import YOLODetection

__all__ = ["build_dataset", "dataset_root", "is_detection"]

log = logging.getLogger("cvkit.data")


def is_detection(cfg: DataConfig) -> bool:
    """True for detection formats, False for classification ones (synthetic_cls, image_folder)."""
    return cfg.format in DETECTION_FORMATS


def dataset_root(cfg: DataConfig, progress: bool = False) -> Path:
    """The dataset folder: ``cfg.root``, or the synthetic data's cache folder (generated when missing)."""
    if cfg.format == "synthetic":
        return generate_detection(cfg.synthetic, cfg.cache_dir or None, progress=progress)
    if cfg.format == "synthetic_cls":
        return generate_classification(cfg.synthetic, cfg.cache_dir or None, progress=progress)
    return Path(cfg.root).expanduser()


def build_dataset(
    cfg: DataConfig,
    split: str = "train",
    report: DataReport | None = None,
    progress: bool = False,
) -> DetectionDataset | ImageFolderDataset:
    """The raw (untransformed) dataset of ``split`` ("train" or "val"; mapped to ``cfg.train_split`` /
    ``cfg.val_split``). ``report`` defaults to a fresh ``DataReport(cfg.on_error)``.

    At the end of loading, skipped problems (``on_error="skip"``) are logged as a warning with their
    counts per kind, and notes (clipped boxes, ...) at info level, on the ``cvkit.data`` logger.
    """
    dataset = _build(cfg, split, report, progress)
    if dataset.report.num_errors:
        log.warning("%s", dataset.report.format(f"{dataset.name}: loaded {len(dataset)} images"))
    elif dataset.report.notes:
        log.info("%s", dataset.report.format(f"{dataset.name}: loaded {len(dataset)} images"))
    return dataset


def _build(
    cfg: DataConfig, split: str, report: DataReport | None, progress: bool
) -> DetectionDataset | ImageFolderDataset:
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    name = cfg.train_split if split == "train" else cfg.val_split
    report = report if report is not None else DataReport(cfg.on_error)
    root = dataset_root(cfg, progress)
    if cfg.format == "synthetic":  # written by cvkit in the default COCO layout, whatever the config says
        return CocoDetection(root, f"annotations/instances_{split}.json", f"images/{split}", report=report, name=split)
    if cfg.format == "synthetic_cls":
        return ImageFolderDataset(root, split, report=report)
    if cfg.format == "coco":
        return CocoDetection(
            root, cfg.coco_ann_file.format(split=name), cfg.coco_image_dir.format(split=name), report=report, name=name
        )
    if cfg.format == "voc":
        return VOCDetection(root, name, cfg.class_names, cfg.keep_difficult, report=report)
    if cfg.format == "yolo":
        return YOLODetection(root, name, cfg.yolo_data_yaml, report=report)
    if cfg.format == "image_folder":
        return ImageFolderDataset(root, name, report=report)
    raise ValueError(f"unknown data.format {cfg.format!r}")
