"""Presets by name, built from the config; albumentations stays inside cvkit.transforms."""

import re
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch

from cvkit.config import ConfigError
from cvkit.transforms import PRESETS, MinIoURandomCrop, PhotometricDistort, TransformsConfig, ZoomOut, build_transform

CVKIT = Path(__file__).resolve().parents[2] / "cvkit"


def kinds(pipeline):
    return [type(t) for t in pipeline.transforms]


def test_presets_are_built_from_the_config():
    cfg = TransformsConfig(size=(128, 96), hflip=False, zoom_out_max=2.5, crop_min_ious=(0.3, 1.0), photometric_p=0.2)
    train = build_transform("ssd_train", cfg)
    assert kinds(train) == [PhotometricDistort, ZoomOut, MinIoURandomCrop, A.Resize]  # no flip
    photometric, zoom, crop, resize = train.transforms
    assert photometric.p_each == 0.2 and zoom.max_ratio == 2.5 and crop.min_ious == (0.3, 1.0)
    assert (resize.height, resize.width) == (128, 96)
    assert zoom.fill == tuple(float(round(255 * m)) for m in cfg.mean)
    assert kinds(build_transform("ssd_train", TransformsConfig()))[-1] is A.HorizontalFlip
    assert kinds(build_transform("ssd_eval", cfg)) == [A.Resize]
    assert kinds(build_transform("cls_train", TransformsConfig(cls_jitter=0))) == [
        A.RandomResizedCrop,
        A.HorizontalFlip,
    ]
    assert kinds(build_transform("cls_eval", cfg)) == [A.SmallestMaxSize, A.CenterCrop]
    assert build_transform("cls_eval", TransformsConfig(size=(224, 224))).transforms[0].max_size == 256
    with pytest.raises(KeyError, match="ssd_train"):
        build_transform("ssd_trian")
    assert set(PRESETS) == {"ssd_train", "ssd_eval", "cls_train", "cls_eval"}


@pytest.mark.parametrize("name", ["ssd_train", "ssd_eval"])
def test_detection_presets_output(name):
    image = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    image[:40, :40] = (200, 100, 30)  # a flat corner: its pixels (and the model's normalized values) are known
    boxes = torch.tensor([[10.0, 20.0, 90.0, 100.0], [100.0, 5.0, 150.0, 60.0]])
    cfg = TransformsConfig(size=(64, 80))
    out = build_transform(name, cfg)({"image": image, "boxes": boxes, "labels": torch.tensor([1, 2])}, seed=3)
    assert out["image"].shape == (3, 64, 80) and out["image"].dtype == torch.uint8
    assert out["boxes"].shape[1] == 4 and len(out["boxes"]) == len(out["labels"])
    if name == "ssd_eval":  # a plain resize: boxes scale by the size ratio
        assert torch.allclose(out["boxes"], boxes * torch.tensor([0.5, 64 / 120, 0.5, 64 / 120]))
        assert out["image"][:, 0, 0].tolist() == [200, 100, 30]  # not normalized: uint8 pixels as they were
        from cvkit.models.preprocess import ImageNormalizer

        expected = (np.array([200, 100, 30]) / 255 - np.array(cfg.mean)) / np.array(cfg.std)
        x = ImageNormalizer(cfg.mean, cfg.std)(out["image"].unsqueeze(0))[0]  # the model's first step
        assert torch.allclose(x[:, 0, 0], torch.tensor(expected, dtype=torch.float32), atol=1e-5)


@pytest.mark.parametrize("name", ["cls_train", "cls_eval"])
def test_classification_presets_output(name):
    image = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    out = build_transform(name, TransformsConfig(size=(48, 48)))({"image": image, "label": 3}, seed=0)
    assert out["image"].shape == (3, 48, 48) and out["image"].dtype == torch.uint8 and out["label"] == 3


def test_only_cvkit_transforms_imports_albumentations():
    pattern = re.compile(r"^\s*(import albumentations|from albumentations)", re.MULTILINE)
    offenders = [
        str(path.relative_to(CVKIT))
        for path in CVKIT.rglob("*.py")
        if pattern.search(path.read_text(encoding="utf-8")) and path.relative_to(CVKIT).parts[0] != "transforms"
    ]
    assert offenders == []


def test_config_validation():
    for bad in ({"zoom_out_max": 0.5}, {"photometric_p": -0.1}, {"std": (0.2, 0.0, 0.2)}, {"crop_min_ious": ()}):
        with pytest.raises(ConfigError):
            TransformsConfig(**bad)
