"""The ``transforms:`` config section (:class:`TransformsConfig`): every preset's parameters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cvkit.config import ConfigError, from_dict, located

__all__ = ["TransformsConfig", "transforms_config_from"]


@dataclass(frozen=True)
class TransformsConfig:
    train_preset: Literal["ssd_train", "ssd_eval", "cls_train", "cls_eval"] = "ssd_train"  # preset for training
    eval_preset: Literal["ssd_train", "ssd_eval", "cls_train", "cls_eval"] = "ssd_eval"  # preset for evaluation
    size: tuple[int, int] = (300, 300)  # output (height, width) of every preset
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # RGB mean, [0, 1] units: model normalizer, zoom-out fill
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)  # RGB std, [0, 1] units: the model's normalizer
    interpolation: Literal["nearest", "linear", "cubic", "area"] = "linear"  # resize interpolation
    hflip: bool = True  # random horizontal flip (switch off where left and right differ, e.g. text, digits)
    hflip_p: float = 0.5  # probability of the flip when hflip is on
    # ssd_train: photometric distortion (each of the five steps applied with probability photometric_p)
    photometric_p: float = 0.5  # probability of each photometric step (0 switches the distortion off)
    brightness: tuple[float, float] = (0.875, 1.125)  # brightness factor range
    contrast: tuple[float, float] = (0.5, 1.5)  # contrast factor range (blend with the mean grey)
    saturation: tuple[float, float] = (0.5, 1.5)  # saturation factor range (blend with the pixel's grey)
    hue: float = 0.05  # max hue rotation, as a fraction of a full turn (0.05 = 18 degrees)
    channel_shuffle: bool = True  # random RGB channel permutation as the fifth photometric step
    # ssd_train: zoom-out (expand) and the SSD min-IoU crop
    zoom_out_p: float = 0.5  # probability of placing the image on a larger canvas filled with the mean colour
    zoom_out_max: float = 4.0  # largest canvas side / image side
    crop_min_ious: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9, 1.0)  # min-IoU choices; >= 1 keeps the whole image
    crop_min_scale: float = 0.3  # crop width and height are at least this fraction of the image's
    crop_max_aspect: float = 2.0  # crop height/width and width/height are at most this
    crop_trials: int = 50  # candidate windows drawn per chosen min IoU
    # ssd_train: mosaic (four images tiled around a random centre, before the steps above; cvkit.transforms.mosaic)
    mosaic_p: float = 0.0  # probability that a training sample is a mosaic (0: off)
    mosaic_off_fraction: float = 0.15  # no mosaics in this last fraction of the run (budget or epochs)
    mosaic_min_visibility: float = 0.4  # a box cut by a tile border keeps at least this fraction of its area
    # box rules after every geometric step (boxes are clipped to the image first)
    min_box_size: float = 1.0  # boxes narrower or shorter than this (pixels) are dropped with their labels
    min_visibility: float = 0.0  # boxes keeping less than this fraction of their area after clipping are dropped
    # cls_train / cls_eval (the classic torchvision ImageNet recipe)
    cls_scale: tuple[float, float] = (0.08, 1.0)  # random resized crop: area fraction range
    cls_ratio: tuple[float, float] = (0.75, 1.3333333333333333)  # random resized crop: aspect ratio range
    cls_jitter: float = 0.4  # colour jitter strength for brightness, contrast and saturation (0: off)
    cls_resize_ratio: float = 0.875  # cls_eval: resize the short side to size / ratio, then centre-crop size

    def __post_init__(self) -> None:
        cfg = self
        problems = []
        if min(cfg.size) < 1:
            problems.append("transforms.size must be positive")
        if min(cfg.std) <= 0:
            problems.append("transforms.std must be positive")
        for name in ("hflip_p", "photometric_p", "zoom_out_p", "min_visibility", "mosaic_p", "mosaic_off_fraction",
                     "mosaic_min_visibility"):
            if not 0.0 <= getattr(cfg, name) <= 1.0:
                problems.append(f"transforms.{name} must be in [0, 1]")
        if cfg.zoom_out_max < 1.0:
            problems.append("transforms.zoom_out_max must be >= 1")
        if not cfg.crop_min_ious or not 0 < cfg.crop_min_scale <= 1 or cfg.crop_max_aspect < 1 or cfg.crop_trials < 1:
            problems.append(
                "transforms.crop_*: need min IoUs, 0 < crop_min_scale <= 1, crop_max_aspect >= 1, trials >= 1"
            )
        if problems:
            raise ConfigError("; ".join(problems))


def transforms_config_from(
    raw: Mapping[str, Any], path: str | Path = "config", overrides: Sequence[str] = ()
) -> TransformsConfig:
    """The strict :class:`TransformsConfig` of a loaded YAML mapping's ``transforms`` section (errors name
    ``path``, or the override among ``overrides`` that set the bad value)."""
    section = raw.get("transforms", {}) or {}
    try:
        cfg = from_dict(TransformsConfig, section, "transforms")
    except ConfigError as exc:
        raise located(exc, path, overrides) from None
    return cfg
