"""ResNet width multiplier: channels scale, width 1 is torchvision's network, pretrained weights need width 1."""

import pytest
import torch
import torchvision

from cvkit.models import ModelConfig, build_backbone
from cvkit.models.backbones.resnet import scaled_channels
from cvkit.models.build import build_dense
from cvkit.ops import AnchorConfig
from tests.models._small import one_thread

pytestmark = pytest.mark.usefixtures(one_thread.__name__)


def test_scaled_channels_round_to_multiples_of_8():
    assert [scaled_channels(c, 0.5) for c in (64, 128, 256, 512)] == [32, 64, 128, 256]
    assert [scaled_channels(c, 0.75) for c in (64, 128, 256, 512)] == [48, 96, 192, 384]
    assert scaled_channels(64, 0.01) == 8


@pytest.mark.parametrize("name, width, expected", [
    ("resnet18", 0.5, [64, 128, 256]),
    ("resnet18", 0.25, [32, 64, 128]),
    ("resnet50", 0.5, [256, 512, 1024]),  # bottleneck expansion 4
])
def test_narrow_resnet_taps_have_scaled_channels_and_same_strides(name, width, expected):
    backbone = build_backbone(name, width=width)
    assert backbone.out_channels == expected
    taps = backbone(torch.zeros(1, 3, 64, 96))
    assert [tuple(t.shape[1:]) for t in taps] == [(c, 64 // s, 96 // s) for c, s in zip(expected, (8, 16, 32))]
    full = sum(p.numel() for p in build_backbone(name).parameters())
    narrow = sum(p.numel() for p in backbone.parameters())
    assert narrow < full * width * width * 1.2  # parameters scale with width squared


def test_width_one_is_torchvision_and_loads_its_weights():
    reference = torchvision.models.resnet18(weights=None)
    backbone = build_backbone("resnet18", reference.state_dict(), width=1.0)
    x = torch.randn(1, 3, 64, 64)
    reference.eval()
    backbone.eval()
    with torch.no_grad():
        r = reference.layer4(reference.layer3(reference.layer2(reference.layer1(reference.maxpool(
            reference.relu(reference.bn1(reference.conv1(x))))))))
        assert torch.equal(backbone(x)[-1], r)


def test_narrow_width_rejects_pretrained_weights_and_other_backbones():
    state = torchvision.models.resnet18(weights=None).state_dict()
    with pytest.raises(ValueError, match="full width"):
        build_backbone("resnet18", state, width=0.5)
    with pytest.raises(ValueError, match="resnet backbones"):
        build_backbone("vgg16", width=0.5)
    with pytest.raises(ValueError, match="> 0"):
        build_backbone("resnet18", width=0.0)


def test_dense_detector_with_a_narrow_backbone_trains():
    anchors = AnchorConfig(style="sizes", image_size=(64, 64), sizes=((16,), (32,), (64,)), aspect_ratios=((1.0,),),
                           steps=(8, 16, 32))
    model = build_dense(ModelConfig(arch="dense", backbone_width=0.25, neck_channels=16, channels_last=False),
                        anchors, 3)
    out = model(torch.randn(2, 3, 64, 64))
    assert out["cls_logits"].shape == (2, 8 * 8 + 4 * 4 + 2 * 2, 3)
    out["cls_logits"].sum().backward()
    assert all(p.grad is not None for p in model.backbone.parameters() if p.requires_grad)


def test_stage_widths_scale_stem_and_each_layer_on_their_own():
    backbone = build_backbone("resnet18", width=(0.25, 0.25, 0.25, 0.5, 0.5))
    stem_conv = backbone.stages[0][0]
    assert stem_conv.out_channels == 16
    assert backbone.out_channels == [32, 128, 256]  # layer2 at 0.25, layer3 and layer4 at 0.5
    taps = backbone(torch.zeros(1, 3, 64, 64))
    assert [tuple(t.shape[1:]) for t in taps] == [(32, 8, 8), (128, 4, 4), (256, 2, 2)]
    # a stem narrower than layer1 gets layer1's 1x1 projection, as torchvision does between stages
    wide_layer1 = build_backbone("resnet18", width=(0.25, 0.5, 0.5, 0.5, 0.5))
    assert wide_layer1.stages[1][0].downsample is not None
    same = build_backbone("resnet18", width=(0.5,) * 5)
    assert same.out_channels == build_backbone("resnet18", width=0.5).out_channels
    with pytest.raises(ValueError, match="one multiplier or five"):
        build_backbone("resnet18", width=(0.5, 0.5))
    with pytest.raises(ValueError, match="> 0"):
        build_backbone("resnet18", width=(0.5, 0.5, 0.0, 0.5, 0.5))


def test_model_config_stage_widths_win_over_the_single_width():
    anchors = AnchorConfig(style="sizes", image_size=(64, 64), sizes=((16,), (32,), (64,)), aspect_ratios=((1.0,),),
                           steps=(8, 16, 32))
    cfg = ModelConfig(arch="dense", backbone_width=0.25, backbone_stage_widths=(0.25, 0.25, 0.25, 0.5, 0.75),
                      neck_channels=16, channels_last=False)
    model = build_dense(cfg, anchors, 3)
    assert model.backbone.out_channels == [32, 128, 384]
    with pytest.raises(ValueError, match="backbone_stage_widths"):
        build_dense(ModelConfig(arch="dense", backbone_stage_widths=(0.5,), neck_channels=16), anchors, 3)
