"""Every zoo model: forward shapes at 28x28 greyscale, 64x64 and 224x224 RGB, one backward with frozen stages."""

import pytest
import torch

from cvkit.engine.config import TrainConfig
from cvkit.engine.optim import model_param_groups
from cvkit.models.classification import MODELS, ClassifierConfig, build_classifier, uses_small_input

NUM_CLASSES = 7


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize(("in_channels", "size"), [(1, 28), (3, 64), (3, 224)])
def test_forward_shapes(name, in_channels, size, one_thread):
    cfg = ClassifierConfig(name=name, in_channels=in_channels, hidden_dim=32)
    model = build_classifier(cfg, NUM_CLASSES, image_size=(size, size)).eval()
    assert uses_small_input(cfg, (size, size)) == (size < 64)
    images = torch.randint(0, 256, (1, in_channels, size, size), dtype=torch.uint8)  # as the loaders give them
    with torch.no_grad():
        logits = model(images)
    assert model.normalizer.num_channels == in_channels
    assert logits.shape == (1, NUM_CLASSES)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_backward_every_trainable_parameter_gets_a_gradient_frozen_ones_none(name):
    cfg = ClassifierConfig(name=name, hidden_dim=32, small_input="on", freeze_stages=2)
    model = build_classifier(cfg, 3, image_size=(8, 8)).train()
    frozen = {id(p) for stage in model.stages[:2] for p in stage.parameters()}
    bn_before = {k: v.clone() for k, v in model.stages[:2].state_dict().items() if "running" in k}
    logits = model(torch.randn(2, 3, 8, 8))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2])).backward()
    for pname, p in model.named_parameters():
        if id(p) in frozen:
            assert not p.requires_grad and p.grad is None, pname
        else:
            assert p.requires_grad and p.grad is not None, pname
    for key, value in model.stages[:2].state_dict().items():  # frozen BatchNorm stays in eval mode
        if key in bn_before:
            assert torch.equal(value, bn_before[key]), key


def test_param_groups_head_lr_multiple_and_names():
    cfg = ClassifierConfig(name="resnet18", head_lr_mult=10.0, freeze_stages=1)
    model = build_classifier(cfg, 4, image_size=(32, 32))
    groups = model_param_groups(model, TrainConfig(lr=0.01, weight_decay=1e-4))
    by_name = {g["name"]: g for g in groups}
    assert list(by_name) == ["backbone", "backbone_no_decay", "head", "head_no_decay"]
    assert by_name["head"]["lr"] == pytest.approx(0.1) and by_name["backbone"]["lr"] == pytest.approx(0.01)
    assert [id(p) for p in by_name["head"]["params"]] == [id(model.head.fc.weight)]
    assert by_name["head_no_decay"]["weight_decay"] == 0.0
    in_groups = {id(p) for g in groups for p in g["params"]}
    assert in_groups == {id(p) for p in model.parameters() if p.requires_grad}
    assert not any(id(p) in in_groups for p in model.stages[0].parameters())


def test_unknown_model_name_suggests():
    with pytest.raises(KeyError, match="did you mean 'resnet18'"):
        build_classifier(ClassifierConfig(name="resnet81"), 3)


def test_freeze_more_stages_than_the_model_has():
    with pytest.raises(ValueError, match="stages"):
        build_classifier(ClassifierConfig(name="lenet", freeze_stages=3), 3)
