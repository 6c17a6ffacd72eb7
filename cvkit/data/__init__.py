"""Datasets: COCO, Pascal VOC and YOLO detection readers, ImageFolder classification, the built-in synthetic
shapes, collate functions and a reproducible DataLoader.

Every detection reader yields the same sample (see :mod:`cvkit.data.dataset`): RGB uint8 ``image``
(H, W, 3), ``boxes`` float32 [M, 4] xyxy absolute pixels, ``labels`` int64 in ``0..num_classes-1``,
``image_id``, ``orig_size`` (height, width), ``file_name`` and ``class_names`` (= ``dataset.class_names``);
``dataset.category_ids[label]`` is the label's id in the source files (COCO: categories sorted by id,
label = rank; see :mod:`cvkit.data.coco`). Images without boxes are kept.

Annotations without decoding images: ``dataset.annotations()`` yields ``ImageAnnotation(image_id,
file_name, size, boxes, labels)`` per image (``size = (height, width)``, torch tensors).

Bad input raises :class:`DataError` (``on_error="raise"``) or is skipped and counted in ``dataset.report``
(``on_error="skip"``); see :mod:`cvkit.data.errors`.
"""

from cvkit.data.build import build_dataset, dataset_root, is_detection
from cvkit.data.coco import CocoDetection
from cvkit.data.collate import collate_classification, collate_detection
from cvkit.data.config import DataConfig, data_config_from
from cvkit.data.dataset import DetectionDataset, ImageAnnotation, ImageRecord
from cvkit.data.errors import ERROR_KINDS, NOTE_KINDS, DataError, DataReport
from cvkit.data.image_folder import ImageFolderDataset
from cvkit.data.io import read_image, read_image_size, safe_join
from cvkit.data.loader import (
    AugmentedDataset,
    EpochSampler,
    build_dataloader,
    loader_from_config,
    sample_seed,
    set_epoch,
    tune_worker_memory,
)
from cvkit.data.synthetic import SHAPES, SyntheticConfig, generate_classification, generate_detection
from cvkit.data.voc import VOC_CLASSES, VOCDetection
from cvkit.data.yolo import YOLODetection

__all__ = [
    "DataError",
    "DataReport",
    "ERROR_KINDS",
    "NOTE_KINDS",
    "DataConfig",
    "data_config_from",
    "DetectionDataset",
    "ImageAnnotation",
    "ImageRecord",
    "CocoDetection",
    "VOCDetection",
    "VOC_CLASSES",
    "YOLODetection",
    "ImageFolderDataset",
    "SHAPES",
    "SyntheticConfig",
    "generate_detection",
    "generate_classification",
    "build_dataset",
    "dataset_root",
    "is_detection",
    "collate_detection",
    "collate_classification",
    "AugmentedDataset",
    "EpochSampler",
    "build_dataloader",
    "loader_from_config",
    "sample_seed",
    "set_epoch",
    "tune_worker_memory",
    "read_image",
    "read_image_size",
    "safe_join",
]
