"""The ``data:`` config section (:class:`DataConfig`) and how to read it from a YAML file.

Every field has a default, so ``data: {}`` means "the built-in synthetic shapes". Unknown keys are rejected
with a suggestion by :mod:`cvkit.config`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cvkit.config import ConfigError, from_dict, located
from cvkit.data.synthetic import SyntheticConfig

__all__ = ["DataConfig", "DATA_FORMATS", "DETECTION_FORMATS", "data_config_from"]

DATA_FORMATS = ("synthetic", "synthetic_cls", "coco", "voc", "yolo", "image_folder")
DETECTION_FORMATS = ("synthetic", "coco", "voc", "yolo")


@dataclass(frozen=True)
class DataConfig:
    # reader: synthetic / synthetic_cls (built-in shapes, detection / classification), coco, voc, yolo, image_folder
    format: Literal["synthetic", "synthetic_cls", "coco", "voc", "yolo", "image_folder"] = "synthetic"
    root: str = ""  # dataset root folder; no file outside it is ever read (unused by synthetic*)
    # train split: {split} in the COCO paths, VOC ImageSets/Main/<split>.txt, YOLO data.yaml key, ImageFolder folder
    train_split: str = "train"
    val_split: str = "val"  # validation split, same meaning as train_split
    coco_ann_file: str = "annotations/instances_{split}.json"  # COCO: annotation file relative to root
    coco_image_dir: str = "images/{split}"  # COCO: folder the JSON's file names are relative to (under root)
    yolo_data_yaml: str = "data.yaml"  # YOLO: class names and split paths, relative to root
    class_names: tuple[str, ...] = ()  # VOC: class list, label = position (empty: the 20 VOC classes)
    keep_difficult: bool = False  # VOC: keep objects marked difficult
    on_error: Literal["raise", "skip"] = "raise"  # bad input: raise a DataError naming file and entry, or skip+count
    cache_dir: str = ""  # synthetic data folder; "" = $CVKIT_CACHE_DIR, else <repo>/.cache, else ~/.cache/cvkit
    batch_size: int = 32  # samples per batch
    num_workers: int = 2  # DataLoader worker processes (0: load in the main process)
    pin_memory: bool = True  # page-locked batches for faster host-to-GPU copies (used only when CUDA is available)
    seed: int = 0  # run seed: shuffling order and the augmentation of sample i in epoch e derive from it
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)  # built-in shapes generator


def data_config_from(raw: Mapping[str, Any], path: str | Path = "config", overrides: Sequence[str] = ()) -> DataConfig:
    """The strict :class:`DataConfig` of a loaded YAML mapping's ``data`` section (absent: defaults).

    Errors name ``path``, or the override among ``overrides`` (already applied to ``raw``) that set the bad value.
    """
    section = raw.get("data", {})
    if section is None:
        section = {}
    try:
        cfg = from_dict(DataConfig, section, "data")
        if cfg.format not in ("synthetic", "synthetic_cls") and not cfg.root:
            raise ConfigError(f"data.root must name the dataset folder for data.format={cfg.format!r}",
                              "data.root", "data.format")
    except ConfigError as exc:
        raise located(exc, path, overrides) from None
    return cfg
