"""Detection models: backbones, the SSD head and detector, and the builders.

    from cvkit.models import build_detector
    model, criterion, postprocessor = build_detector(model_cfg, loss_cfg, post_cfg, anchor_cfg, num_classes,
                                                     mean=tf_cfg.mean, std=tf_cfg.std)
    outputs = model(images)  # uint8 (B, 3, H, W): the model's first module normalizes them (models.preprocess)

Background is logit 0 (see ``cvkit.models.detector``). ``BACKBONES`` and ``DETECTORS`` are plain dicts
name -> builder function.
"""

from cvkit.models.backbones import Backbone, SSDExtras
from cvkit.models.build import BACKBONES, DETECTORS, build_backbone, build_detector, build_ssd, load_weights_file
from cvkit.models.config import LossConfig, ModelConfig, PostprocessConfig
from cvkit.models.detector import BACKGROUND_INDEX, SSDDetector
from cvkit.models.fuse import fold_batchnorm
from cvkit.models.heads import SSDHead
from cvkit.models.preprocess import ImageNormalizer

__all__ = [
    "BACKBONES",
    "DETECTORS",
    "BACKGROUND_INDEX",
    "Backbone",
    "SSDExtras",
    "SSDHead",
    "SSDDetector",
    "ImageNormalizer",
    "ModelConfig",
    "LossConfig",
    "PostprocessConfig",
    "build_backbone",
    "build_ssd",
    "build_detector",
    "load_weights_file",
    "fold_batchnorm",
]
