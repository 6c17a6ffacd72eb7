"""Augmentation: presets by name (``ssd_train``, ``ssd_eval``, ``cls_train``, ``cls_eval``), the SSD transforms
albumentations lacks, and the :class:`Pipeline` that applies them with cvkit's box rules.

This is the only part of cvkit that imports albumentations.

    from cvkit.transforms import TransformsConfig, ssd_train
    pipeline = ssd_train(TransformsConfig(size=(300, 300)))
    out = pipeline(dataset[0], seed=0)   # image (3, 300, 300) uint8, boxes [M', 4], labels [M']
    print(pipeline.format_stats())       # per step: boxes in / clipped / dropped

Images stay uint8: the model normalizes them itself (:mod:`cvkit.models.preprocess`).
"""

from cvkit.transforms.config import TransformsConfig, transforms_config_from
from cvkit.transforms.pipeline import Pipeline, StepStats, to_chw_tensor
from cvkit.transforms.presets import PRESETS, build_transform, cls_eval, cls_train, ssd_eval, ssd_train
from cvkit.transforms.ssd import MinIoURandomCrop, PhotometricDistort, ZoomOut, hue_matrix, photometric_matrix
from cvkit.transforms.ssd_fast import SSDTrainPipeline

__all__ = [
    "TransformsConfig",
    "transforms_config_from",
    "Pipeline",
    "SSDTrainPipeline",
    "StepStats",
    "to_chw_tensor",
    "PRESETS",
    "build_transform",
    "ssd_train",
    "ssd_eval",
    "cls_train",
    "cls_eval",
    "PhotometricDistort",
    "ZoomOut",
    "MinIoURandomCrop",
    "photometric_matrix",
    "hue_matrix",
]
