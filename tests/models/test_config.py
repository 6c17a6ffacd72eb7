"""The model:, loss: and postprocess: sections load from plain YAML dicts with strict keys."""

import pytest

from cvkit.config import ConfigError, from_dict, to_dict
from cvkit.losses.config import LossConfig as LossConfigFromLosses
from cvkit.models.config import LossConfig, ModelConfig, PostprocessConfig
from cvkit.postprocess import PostprocessConfig as PostprocessConfigFromPostprocess


def test_sections_round_trip_through_plain_dicts():
    model = from_dict(ModelConfig, {"backbone": "vgg16", "extra_channels": [512, 256, 256, 256], "freeze_stages": 2})
    assert model.backbone == "vgg16" and model.extra_channels == (512, 256, 256, 256) and model.freeze_stages == 2
    for cfg in (model, LossConfig(box_loss="giou"), PostprocessConfig(soft_nms="gaussian")):
        assert from_dict(type(cfg), to_dict(cfg)) == cfg
    assert LossConfig is LossConfigFromLosses and PostprocessConfig is PostprocessConfigFromPostprocess


def test_unknown_keys_and_bad_choices_are_rejected():
    with pytest.raises(ConfigError, match="did you mean 'backbone_lr_mult'"):
        from_dict(ModelConfig, {"backbone_lr_mul": 0.1})
    with pytest.raises(ConfigError, match="'l1' is not one of"):
        from_dict(LossConfig, {"box_loss": "l1"})
    with pytest.raises(ConfigError, match="did you mean 'iou_thresh'"):
        from_dict(PostprocessConfig, {"iou_threshold": 0.5})
