"""One weight-decay rule for every model: detectors, classifiers and the engine's fallback agree."""

import torch
from torch import nn

from cvkit.engine.optim import default_param_groups
from cvkit.models.param_groups import skips_weight_decay


def _expected_no_decay(model: nn.Module) -> set[int]:
    return {id(p) for m in model.modules() for n, p in m.named_parameters(recurse=False)
            if p.requires_grad and skips_weight_decay(m, n, p)}


def _no_decay_ids(groups) -> set[int]:
    return {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}


def test_the_rule_names_norm_parameters_biases_and_vectors():
    conv, bn, scale = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Parameter(torch.ones(4))
    assert not skips_weight_decay(conv, "weight", conv.weight) and skips_weight_decay(conv, "bias", conv.bias)
    assert skips_weight_decay(bn, "weight", bn.weight) and skips_weight_decay(nn.Module(), "scale", scale)


def test_detector_classifier_and_fallback_groups_follow_the_same_rule():
    from cvkit.losses.config import LossConfig
    from cvkit.models.build import build_detector
    from cvkit.models.classification.build import build_classifier
    from cvkit.models.classification.config import ClassifierConfig
    from cvkit.models.config import ModelConfig
    from cvkit.ops.anchors import AnchorConfig
    from cvkit.postprocess import PostprocessConfig

    detector, _, _ = build_detector(ModelConfig(backbone="vgg16"), LossConfig(), PostprocessConfig(), AnchorConfig(),
                                    num_classes=3)
    classifier = build_classifier(ClassifierConfig(name="resnet_mini"), 5, image_size=(32, 32))
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    plain(torch.zeros(1, 3, 8, 8))
    for model in (detector, classifier):
        groups = model.param_groups(0.1, 1e-4, no_decay_norm_bias=True)
        assert _no_decay_ids(groups) == _expected_no_decay(model)
    assert _no_decay_ids(default_param_groups(plain, 0.1, 1e-4)) == _expected_no_decay(plain)
    assert any(type(m).__name__ == "L2Norm" for m in detector.modules())  # its scale is a vector: no decay
