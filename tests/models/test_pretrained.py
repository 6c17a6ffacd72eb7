"""Pretrained weights from local files: torchvision state_dicts, cvkit checkpoints, a new head, errors."""

import pytest
import torch
import torchvision

from cvkit.checkpoint import CheckpointError
from cvkit.models import ModelConfig, build_ssd, load_weights_file
from tests.models._small import SMALL, SMALL_ANCHORS, one_thread, small_model_cfg

pytestmark = pytest.mark.usefixtures(one_thread.__name__)


def _randomize(module: torch.nn.Module) -> None:
    """Give every parameter and BatchNorm buffer distinct random values (so a missed key would show)."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn_like(m.running_mean) * 0.1)
                m.running_var.copy_(torch.rand_like(m.running_var) + 0.5)


def test_resnet18_torchvision_state_dict_is_loaded(tmp_path):
    net = torchvision.models.resnet18(weights=None)
    _randomize(net)
    path = tmp_path / "resnet18.pth"
    torch.save(net.state_dict(), path)
    model = build_ssd(small_model_cfg("resnet18", pretrained=str(path)), SMALL_ANCHORS, 3).eval()
    net.eval()
    stages = model.backbone.stages
    assert torch.equal(stages[0][0].weight, net.conv1.weight)
    assert torch.equal(stages[4][1].bn2.running_var, net.layer4[1].bn2.running_var)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        taps = model.backbone(x)
        y = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        c2 = net.layer2(net.layer1(y))
        c3 = net.layer3(c2)
        c4 = net.layer4(c3)
    for ours, ref in zip(taps, (c2, c3, c4)):  # every loaded value is used exactly like torchvision does
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_densenet121_torchvision_state_dict_is_loaded(tmp_path):
    net = torchvision.models.densenet121(weights=None)
    _randomize(net)
    path = tmp_path / "densenet121.pth"
    # old torchvision files spell "norm.1" what the module calls "norm1": both must load
    state = {k.replace("denselayer1.norm1.", "denselayer1.norm.1."): v for k, v in net.state_dict().items()}
    assert any("norm.1." in k for k in state)
    torch.save(state, path)
    model = build_ssd(small_model_cfg("densenet121", pretrained=str(path)), SMALL_ANCHORS, 3).eval()
    net.eval()
    f = net.features
    x = torch.randn(1, 3, 64, 64)  # sizes divisible by 32: ceil-mode pooling changes nothing
    with torch.no_grad():
        taps = model.backbone(x)
        y = f.denseblock2(f.transition1(f.denseblock1(f.pool0(f.relu0(f.norm0(f.conv0(x)))))))
        c2 = f.transition2.relu(f.transition2.norm(y))
        y = f.denseblock3(f.transition2(y))
        c3 = f.transition3.relu(f.transition3.norm(y))
        c4 = torch.relu(f.norm5(f.denseblock4(f.transition3(y))))
    for ours, ref in zip(taps, (c2, c3, c4)):
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_vgg16_state_dict_without_classifier_is_loaded(tmp_path):
    net = torchvision.models.vgg16_bn(weights=None)
    _randomize(net.features)
    path = tmp_path / "vgg16_bn_features.pth"
    torch.save({k: v for k, v in net.state_dict().items() if k.startswith("features.")}, path)
    model = build_ssd(small_model_cfg("vgg16_bn", pretrained=str(path)), SMALL_ANCHORS, 3)
    ours = {id(m): m for m in model.backbone.modules()}
    theirs = [m for m in net.features if isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d))]
    loaded = [m for m in model.backbone.stages[:5].modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d))]
    assert len(loaded) == len(theirs) == 26 and len(ours) > 0
    for a, b in zip(loaded, theirs):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
        if isinstance(a, torch.nn.BatchNorm2d):
            assert torch.equal(a.running_mean, b.running_mean) and torch.equal(a.running_var, b.running_var)


def test_missing_file_and_wrong_architecture_are_clear_errors(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="pretrained weights file not found: .*nope.pth"):
        build_ssd(small_model_cfg("resnet18", pretrained=str(missing)), SMALL_ANCHORS, 3)
    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="do not fit torchvision's resnet18: .*unexpected keys"):
        build_ssd(small_model_cfg("resnet18", pretrained=str(path)), SMALL_ANCHORS, 3)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="model.pretrained: cannot read pretrained weights from .*bad.pth"):
        load_weights_file(bad)


def test_checkpoint_same_classes_loads_everything(tmp_path):
    source = build_ssd(small_model_cfg("resnet18"), SMALL_ANCHORS, 3)
    _randomize(source)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": source.state_dict(), "epoch": 3, "extra_state": {"class_names": ["a", "b", "c"]}}, path)
    model = build_ssd(small_model_cfg("resnet18", pretrained=str(path)), SMALL_ANCHORS, 3)
    theirs = source.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, theirs[key]), key


def test_checkpoint_with_other_class_count_gets_a_new_head(tmp_path):
    source = build_ssd(small_model_cfg("resnet18"), SMALL_ANCHORS, 3)
    _randomize(source)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": {"module." + k: v for k, v in source.state_dict().items()}}, path)  # DDP prefix too
    model = build_ssd(small_model_cfg("resnet18", pretrained=str(path)), SMALL_ANCHORS, 7)
    theirs = source.state_dict()
    for key, value in model.state_dict().items():
        if key.startswith("head.cls_convs."):
            assert value.shape[0] == theirs[key].shape[0] // 4 * 8  # K * (7 + 1) instead of K * (3 + 1)
        else:
            assert torch.equal(value, theirs[key]), key
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, SMALL, SMALL))["cls_logits"].shape[-1] == 8


def test_checkpoint_of_another_backbone_is_rejected(tmp_path):
    source = build_ssd(small_model_cfg("resnet18"), SMALL_ANCHORS, 3)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": source.state_dict()}, path)
    with pytest.raises(ValueError, match="checkpoint does not fit this model"):
        build_ssd(ModelConfig(backbone="resnet34", num_valid_extras=0, pretrained=str(path)), SMALL_ANCHORS, 3)


def test_bare_detector_state_dict_counts_as_a_checkpoint(tmp_path):
    source = build_ssd(small_model_cfg("resnet18"), SMALL_ANCHORS, 3)
    path = tmp_path / "state.pt"
    torch.save(source.state_dict(), path)
    kind, state = load_weights_file(path)
    assert kind == "checkpoint" and set(state) == set(source.state_dict())
