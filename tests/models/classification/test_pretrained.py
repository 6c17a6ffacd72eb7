"""Pretrained weights from local files (torchvision state_dict, cvkit checkpoint) with a new head."""

import pytest
import torch
import torchvision

from cvkit.engine.checkpoint import CHECKPOINT_FORMAT, save_checkpoint
from cvkit.engine.config import TrainConfig
from cvkit.engine.optim import model_param_groups
from cvkit.models.classification import ClassifierConfig, build_classifier


@pytest.fixture(scope="module")
def tv_resnet18(tmp_path_factory):
    torch.manual_seed(1)
    tv = torchvision.models.resnet18(weights=None)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(tv.state_dict(), path)
    return tv, path


def test_torchvision_weights_new_head_lr_mult_and_frozen_stages(tv_resnet18):
    tv, path = tv_resnet18
    cfg = ClassifierConfig(name="resnet18", pretrained=str(path), head_lr_mult=10.0, freeze_stages=2)
    model = build_classifier(cfg, 5, image_size=(64, 64))
    assert torch.equal(model.stages[0][0].weight, tv.conv1.weight)  # stem conv
    assert torch.equal(model.stages[4][1].conv2.weight, tv.layer4[1].conv2.weight)
    assert torch.equal(model.stages[1][0].bn1.running_var, tv.layer1[0].bn1.running_var)
    assert model.head.fc.weight.shape == (5, 512)
    assert not any(p.requires_grad for p in model.stages[1].parameters())
    assert all(p.requires_grad for p in model.stages[2].parameters())
    groups = {g["name"]: g for g in model_param_groups(model, TrainConfig(lr=0.001))}
    assert groups["head"]["lr"] == pytest.approx(0.01) and groups["backbone"]["lr"] == pytest.approx(0.001)
    model.eval()
    tv.eval()
    with torch.no_grad():  # same features as torchvision's network
        x = torch.randn(2, 3, 64, 64)
        feats = x
        for stage in model.stages:
            feats = stage(feats)
        ref = tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))))
        torch.testing.assert_close(feats, ref)


def test_torchvision_weights_greyscale_first_conv_is_the_channel_mean(tv_resnet18):
    tv, path = tv_resnet18
    model = build_classifier(ClassifierConfig(name="resnet18", in_channels=1, pretrained=str(path)), 3, (64, 64))
    torch.testing.assert_close(model.stages[0][0].weight, tv.conv1.weight.sum(dim=1, keepdim=True))


def test_wrong_torchvision_file_and_cvkit_only_models(tmp_path, tv_resnet18):
    _, path = tv_resnet18
    with pytest.raises(ValueError, match="do not fit torchvision's resnet34"):
        build_classifier(ClassifierConfig(name="resnet34", pretrained=str(path)), 3)
    with pytest.raises(ValueError, match="no torchvision counterpart"):
        build_classifier(ClassifierConfig(name="lenet", pretrained=str(path)), 3)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="classifier.pretrained: .* not found: .*nope.pth.*never downloaded"):
        build_classifier(ClassifierConfig(name="resnet18", pretrained=str(tmp_path / "nope.pth")), 3)


def test_cvkit_checkpoint_with_new_head(tmp_path):
    source = build_classifier(ClassifierConfig(name="lenet_bn"), 4, (32, 32))
    with torch.no_grad():
        for p in source.parameters():
            p.add_(1.0)
    state = {"format": CHECKPOINT_FORMAT, "model": source.state_dict(), "ema": None}
    path = save_checkpoint(tmp_path / "last.pt", state)
    model = build_classifier(ClassifierConfig(name="lenet_bn", pretrained=str(path)), 6, (32, 32))
    assert torch.equal(model.stages[1][0].weight, source.stages[1][0].weight)
    assert torch.equal(model.head.fc1.weight, source.head.fc1.weight)
    assert model.head.fc.weight.shape == (6, 84)
    kept = build_classifier(ClassifierConfig(name="lenet_bn", pretrained=str(path), reset_head=False), 4, (32, 32))
    assert torch.equal(kept.head.fc.weight, source.head.fc.weight)
    with pytest.raises(ValueError, match="reset_head=false"):
        build_classifier(ClassifierConfig(name="lenet_bn", pretrained=str(path), reset_head=False), 6, (32, 32))
    with pytest.raises(ValueError, match="do not fit"):
        build_classifier(ClassifierConfig(name="lenet", pretrained=str(path)), 6, (32, 32))
