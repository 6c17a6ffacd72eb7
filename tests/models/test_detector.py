"""SSD detector: feature sizes per backbone, output shapes, the gradient zoo test, freezing, param groups."""

import pytest
import torch

from cvkit.models import (
    BACKBONES,
    DETECTORS,
    LossConfig,
    ModelConfig,
    PostprocessConfig,
    build_backbone,
    build_detector,
    build_ssd,
)
from cvkit.ops import AnchorConfig
from tests.models._small import SMALL, SMALL_ANCHORS, one_thread, small_model_cfg

pytestmark = pytest.mark.usefixtures(one_thread.__name__)

ALL_BACKBONES = ["vgg16", "vgg16_bn", "resnet18", "resnet34", "resnet50", "densenet121"]
TAP_CHANNELS = {
    "vgg16": [512, 1024],
    "vgg16_bn": [512, 1024],
    "resnet18": [128, 256, 512],
    "resnet34": [128, 256, 512],
    "resnet50": [512, 1024, 2048],
    "densenet121": [512, 1024, 1024],
}


def _targets(batch: int, size: int) -> list[dict]:
    s = float(size)
    boxes = [
        torch.tensor([[0.1 * s, 0.1 * s, 0.5 * s, 0.6 * s], [0.55 * s, 0.3 * s, 0.95 * s, 0.9 * s]]),
        torch.tensor([[0.2 * s, 0.2 * s, 0.8 * s, 0.8 * s]]),
    ]
    labels = [torch.tensor([0, 2]), torch.tensor([1])]
    return [{"boxes": boxes[i % 2], "labels": labels[i % 2]} for i in range(batch)]


def test_registry_is_complete_and_unknown_names_list_valid_ones():
    assert sorted(BACKBONES) == sorted(ALL_BACKBONES)
    assert list(DETECTORS) == ["ssd", "dense"]
    with pytest.raises(ValueError, match="resnet18") as err:
        build_backbone("resnet19")
    assert "densenet121" in str(err.value) and "vgg16_bn" in str(err.value)
    with pytest.raises(ValueError, match="unknown detector 'yolo'.*ssd"):
        build_detector(ModelConfig(arch="yolo"), LossConfig(), PostprocessConfig(), AnchorConfig(), 3)


@pytest.mark.parametrize("name", ALL_BACKBONES)
def test_ssd300_feature_sizes_match_default_anchors(name):
    model = build_ssd(ModelConfig(backbone=name), AnchorConfig(), num_classes=3)
    assert model.feature_sizes((300, 300)) == [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]
    assert model.backbone.out_channels == TAP_CHANNELS[name]
    num_extras = 6 - len(TAP_CHANNELS[name])
    assert len(model.extras.out_channels) == num_extras
    assert model.extras.out_channels == list(ModelConfig().extra_channels[:num_extras])


def test_resnet18_ssd300_forward_shapes():
    model = build_ssd(ModelConfig(backbone="resnet18"), AnchorConfig(), num_classes=4).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 300, 300))
    assert set(out) == {"cls_logits", "bbox_deltas", "anchors"}
    assert out["cls_logits"].shape == (1, 8732, 5)
    assert out["bbox_deltas"].shape == (1, 8732, 4)
    expected = AnchorConfig().build()(AnchorConfig().resolved_feature_sizes(), (300, 300))
    assert torch.equal(out["anchors"], expected)


@pytest.mark.parametrize("name", ALL_BACKBONES)
def test_forward_shapes_and_backward_reach_every_trainable_parameter(name):
    """timm-style zoo test: output shapes; one backward reaches every trainable parameter and no frozen one."""
    model, criterion, _ = build_detector(
        small_model_cfg(name, freeze_stages=2), LossConfig(), PostprocessConfig(), SMALL_ANCHORS, num_classes=3
    )
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("backbone.stages.0.", "backbone.stages.1.")) for n in frozen)
    assert not any(n.startswith("backbone.stages.2.") for n in frozen)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    outputs = model(torch.randn(2, 3, SMALL, SMALL))
    sizes = SMALL_ANCHORS.resolved_feature_sizes()
    assert model.feature_sizes((SMALL, SMALL)) == sizes
    per_location = SMALL_ANCHORS.build().num_anchors_per_location()
    num_anchors = sum(h * w * k for (h, w), k in zip(sizes, per_location))
    assert outputs["cls_logits"].shape == (2, num_anchors, 4)  # 3 classes + background
    assert outputs["bbox_deltas"].shape == (2, num_anchors, 4)
    assert outputs["anchors"].shape == (num_anchors, 4)
    losses = criterion(outputs, _targets(2, SMALL))
    assert torch.isfinite(losses["loss"]) and losses["loss"] > 0
    losses["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"
    nonfinite = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not nonfinite
    assert all(p.grad is None for n, p in model.named_parameters() if n in frozen)
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert changed and not set(changed) & frozen


def test_frozen_stages_and_freeze_bn_keep_batchnorm_statistics():
    model = build_ssd(small_model_cfg("resnet18", freeze_stages=1, freeze_bn=False), SMALL_ANCHORS, 2)
    stem_bn = model.backbone.stages[0][1]
    layer1_bn = model.backbone.stages[1][0].bn1
    stem_mean, layer1_mean = stem_bn.running_mean.clone(), layer1_bn.running_mean.clone()
    model.train()
    assert not stem_bn.training and layer1_bn.training
    model(torch.randn(2, 3, SMALL, SMALL) + 1.0)
    assert torch.equal(stem_bn.running_mean, stem_mean)  # frozen stage: statistics fixed
    assert not torch.equal(layer1_bn.running_mean, layer1_mean)  # trainable stage: statistics move

    model = build_ssd(small_model_cfg("resnet18", freeze_bn=True), SMALL_ANCHORS, 2).train()
    bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    extra_bn = next(m for m in model.extras.modules() if isinstance(m, torch.nn.BatchNorm2d))
    stats = [m.running_mean.clone() for m in bns]
    extra_stats = extra_bn.running_mean.clone()
    model(torch.randn(2, 3, SMALL, SMALL) + 1.0)
    assert all(torch.equal(m.running_mean, s) for m, s in zip(bns, stats))
    assert all(m.weight.requires_grad for m in bns)  # only the statistics are frozen
    assert not torch.equal(extra_bn.running_mean, extra_stats)  # new layers are not affected


def test_freeze_stages_out_of_range():
    with pytest.raises(ValueError, match="freeze_stages must be in 0..5"):
        build_ssd(small_model_cfg("resnet18", freeze_stages=6), SMALL_ANCHORS, 2)


def test_param_groups_lr_mult_decay_and_frozen():
    model = build_ssd(small_model_cfg("vgg16", freeze_stages=1, backbone_lr_mult=0.1), SMALL_ANCHORS, 2)
    groups = model.param_groups(lr=0.01, weight_decay=5e-4)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"backbone", "backbone_no_decay", "head", "head_no_decay"}
    assert by_name["backbone"]["lr"] == pytest.approx(0.001) and by_name["backbone"]["lr_mult"] == 0.1
    assert by_name["head"]["lr"] == 0.01 and by_name["head"]["weight_decay"] == 5e-4
    assert by_name["backbone_no_decay"]["weight_decay"] == 0.0 and by_name["head_no_decay"]["weight_decay"] == 0.0
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert len(ids) == len(set(ids)) and set(ids) == trainable  # disjoint, complete, no frozen parameter
    names = {id(p): n for n, p in model.named_parameters()}
    head_names = [names[id(p)] for p in by_name["head"]["params"] + by_name["head_no_decay"]["params"]]
    # VGG's new conv6/conv7 (stage 5) and L2Norm learn at the full rate, with the extras and the head
    assert any(n.startswith("backbone.stages.5.") for n in head_names)
    assert "backbone.tap_norms.3.weight" in [names[id(p)] for p in by_name["head_no_decay"]["params"]]
    assert all(p.dim() > 1 for p in by_name["backbone"]["params"] + by_name["head"]["params"])
    assert all(p.dim() == 1 for p in by_name["backbone_no_decay"]["params"] + by_name["head_no_decay"]["params"])
    groups = model.param_groups(lr=0.01, weight_decay=5e-4, no_decay_norm_bias=False)
    assert [g["name"] for g in groups] == ["backbone", "head"]
    torch.optim.SGD(groups, lr=0.01, momentum=0.9)  # accepted by an optimizer as is


def test_anchor_feature_size_mismatch_is_reported():
    anchors = AnchorConfig(image_size=(SMALL, SMALL), steps=(8, 16, 32, 32, 64, 64))  # expects 8,4,2,2,1,1
    with pytest.raises(ValueError, match="gives feature maps .* but the anchors expect"):
        build_ssd(small_model_cfg("resnet18"), anchors, 2)
    with pytest.raises(ValueError, match="too small"):
        build_ssd(ModelConfig(backbone="resnet18"), AnchorConfig(image_size=(160, 160)), 2)


def test_channels_last_gives_the_same_outputs():
    torch.manual_seed(0)
    a = build_ssd(small_model_cfg("resnet18", channels_last=True), SMALL_ANCHORS, 2).eval()
    b = build_ssd(small_model_cfg("resnet18", channels_last=False), SMALL_ANCHORS, 2).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, SMALL, SMALL)
    with torch.no_grad():
        out_a, out_b = a(x), b(x)
    torch.testing.assert_close(out_a["cls_logits"], out_b["cls_logits"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out_a["bbox_deltas"], out_b["bbox_deltas"], atol=1e-4, rtol=1e-4)
    assert out_a["cls_logits"].is_contiguous()


def test_anchors_without_steps_tile_the_actual_feature_maps():
    anchors_cfg = AnchorConfig(image_size=(80, 80), steps=None)
    model = build_ssd(small_model_cfg("resnet18"), anchors_cfg, 2).eval()
    assert model.feature_sizes((80, 80)) == [(10, 10), (5, 5), (3, 3), (2, 2), (1, 1), (1, 1)]
    with torch.no_grad():
        out = model(torch.randn(1, 3, 80, 80))
    centres = (out["anchors"][:, :2] + out["anchors"][:, 2:]) / 2
    assert centres.min() > 0 and centres.max() < 80
    last = out["anchors"][-4:]  # the 1x1 level: every shape centred on the image
    torch.testing.assert_close((last[:, :2] + last[:, 2:]) / 2, torch.full((4, 2), 40.0))
