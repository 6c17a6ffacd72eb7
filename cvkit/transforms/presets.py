"""Augmentation presets by name; every parameter comes from :class:`TransformsConfig`.

=============  ===============================================================================================
``ssd_train``  PhotometricDistort -> ZoomOut -> MinIoURandomCrop -> Resize -> HorizontalFlip (if ``hflip``).
               Boxes are clipped and size-filtered after every geometric step. (The flip commutes with the
               resize; flipping after it touches fewer pixels.) Built as an
               :class:`~cvkit.transforms.ssd_fast.SSDTrainPipeline`: the same results as the step loop of
               :class:`Pipeline`, with the box work compiled.
``ssd_eval``   Resize (boxes follow, so predictions map back by the size ratio).
``cls_train``  RandomResizedCrop -> HorizontalFlip (if ``hflip``) -> ColorJitter (the classic torchvision
               ImageNet recipe).
``cls_eval``   resize the short side to ``size / cls_resize_ratio`` -> CenterCrop ``size``.
=============  ===============================================================================================

Each builder is a plain function ``preset(cfg, seed=None) -> Pipeline``; :data:`PRESETS` maps names to them.
Every preset outputs uint8 ``(3, H, W)`` tensors (channel-last views) and does not normalize: the model's first
module does, from ``cfg.mean`` / ``cfg.std`` as buffers in its state_dict (:mod:`cvkit.models.preprocess`).
``cfg.mean`` is also the zoom-out and mosaic fill colour.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import albumentations as A
import cv2

from cvkit.transforms.config import TransformsConfig
from cvkit.transforms.mosaic import Mosaic
from cvkit.transforms.pipeline import Pipeline
from cvkit.transforms.ssd import MinIoURandomCrop, PhotometricDistort, ZoomOut
from cvkit.transforms.ssd_fast import SSDTrainPipeline

__all__ = ["build_mosaic", "ssd_train", "ssd_eval", "cls_train", "cls_eval", "PRESETS", "build_transform",
           "cv2_interpolation"]

_P = TypeVar("_P", bound=Pipeline)

_INTERPOLATION = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
}


def cv2_interpolation(name: str) -> int:
    """OpenCV's flag for a ``transforms.interpolation`` name (nearest, linear, cubic, area)."""
    if name not in _INTERPOLATION:
        raise ValueError(f"unknown interpolation {name!r}; expected one of {sorted(_INTERPOLATION)}")
    return _INTERPOLATION[name]


def _pipeline(kind: type[_P], transforms: list, cfg: TransformsConfig, seed: int | None, name: str) -> _P:
    return kind(
        transforms, as_tensor=True, min_box_size=cfg.min_box_size,
        min_visibility=cfg.min_visibility, seed=seed, name=name,
    )


def build_mosaic(cfg: TransformsConfig) -> Mosaic | None:
    """The training loader's :class:`~cvkit.transforms.mosaic.Mosaic` for ``cfg`` (``None`` when ``mosaic_p``
    is 0).
    Mosaics fill the uncovered canvas with the mean colour, as the zoom-out does."""
    if cfg.mosaic_p <= 0:
        return None
    fill = tuple(int(round(255 * m)) for m in cfg.mean)
    return Mosaic(p=cfg.mosaic_p, until=1.0 - cfg.mosaic_off_fraction, size=(int(cfg.size[0]), int(cfg.size[1])),
                  fill=(fill[0], fill[1], fill[2]), min_box_size=cfg.min_box_size,
                  min_visibility=cfg.mosaic_min_visibility)


def ssd_train(cfg: TransformsConfig | None = None, seed: int | None = None) -> SSDTrainPipeline:
    """SSD training augmentation (see the module table)."""
    cfg = cfg or TransformsConfig()
    fill = tuple(round(255 * m) for m in cfg.mean)
    transforms = [
        PhotometricDistort(
            brightness=cfg.brightness, contrast=cfg.contrast, saturation=cfg.saturation, hue=cfg.hue,
            channel_shuffle=cfg.channel_shuffle, p_each=cfg.photometric_p, p=1.0 if cfg.photometric_p > 0 else 0.0,
        ),
        ZoomOut(max_ratio=cfg.zoom_out_max, fill=fill, p=cfg.zoom_out_p),
        MinIoURandomCrop(
            min_ious=cfg.crop_min_ious, min_scale=cfg.crop_min_scale, max_aspect=cfg.crop_max_aspect,
            trials=cfg.crop_trials,
        ),
    ]
    # Resize before the flip: the two commute, and flipping the resized image is cheaper.
    transforms.append(A.Resize(*cfg.size, interpolation=_INTERPOLATION[cfg.interpolation]))
    if cfg.hflip:
        transforms.append(A.HorizontalFlip(p=cfg.hflip_p))
    return _pipeline(SSDTrainPipeline, transforms, cfg, seed, "ssd_train")


def ssd_eval(cfg: TransformsConfig | None = None, seed: int | None = None) -> Pipeline:
    """SSD evaluation: resize to ``cfg.size``."""
    cfg = cfg or TransformsConfig()
    resize = A.Resize(*cfg.size, interpolation=_INTERPOLATION[cfg.interpolation])
    return _pipeline(Pipeline, [resize], cfg, seed, "ssd_eval")


def cls_train(cfg: TransformsConfig | None = None, seed: int | None = None) -> Pipeline:
    """Classification training: random resized crop, flip, colour jitter."""
    cfg = cfg or TransformsConfig()
    transforms: list = [
        A.RandomResizedCrop(
            size=cfg.size, scale=cfg.cls_scale, ratio=cfg.cls_ratio, interpolation=_INTERPOLATION[cfg.interpolation]
        )
    ]
    if cfg.hflip:
        transforms.append(A.HorizontalFlip(p=cfg.hflip_p))
    if cfg.cls_jitter > 0:
        j = cfg.cls_jitter
        transforms.append(A.ColorJitter(brightness=j, contrast=j, saturation=j, hue=0.0, p=1.0))
    return _pipeline(Pipeline, transforms, cfg, seed, "cls_train")


def cls_eval(cfg: TransformsConfig | None = None, seed: int | None = None) -> Pipeline:
    """Classification evaluation: resize the short side to ``size / cls_resize_ratio``, centre-crop."""
    cfg = cfg or TransformsConfig()
    short = round(min(cfg.size) / cfg.cls_resize_ratio)
    transforms = [
        A.SmallestMaxSize(max_size=short, interpolation=_INTERPOLATION[cfg.interpolation]),
        A.CenterCrop(*cfg.size),
    ]
    return _pipeline(Pipeline, transforms, cfg, seed, "cls_eval")


PRESETS: dict[str, Callable[..., Pipeline]] = {
    "ssd_train": ssd_train,
    "ssd_eval": ssd_eval,
    "cls_train": cls_train,
    "cls_eval": cls_eval,
}


def build_transform(name: str, cfg: TransformsConfig | None = None, seed: int | None = None) -> Pipeline:
    """The preset ``name`` built from ``cfg``; an unknown name raises ``KeyError`` listing the presets."""
    if name not in PRESETS:
        raise KeyError(f"unknown transform preset {name!r}; presets: {sorted(PRESETS)}")
    return PRESETS[name](cfg, seed)
