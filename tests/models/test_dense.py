"""The dense detector (FPN / PAN neck, shared head, sigmoid logits): shapes, the prior bias, gradients, the
loss's targets, the postprocessor's sigmoid scores, fine-tuning from a checkpoint, and a short overfit."""

import math
import time

import pytest
import torch
from torchvision.ops import box_iou

from cvkit.losses.dense import DenseLoss, quality_focal_loss, sigmoid_focal_loss
from cvkit.models import LossConfig, ModelConfig, PostprocessConfig, build_detector
from cvkit.models.detector import DenseDetector
from cvkit.ops import AnchorConfig
from tests.models.test_overfit import _synthetic_batch

SIZE = 96
ANCHORS = AnchorConfig(style="sizes", image_size=(SIZE, SIZE), sizes=((24,), (48,), (96,)), aspect_ratios=((1.0,),),
                       steps=(8, 16, 32))
LOSS = LossConfig(cls_loss="qfl", box_loss="giou", assigner="atss", box_weight=2.0)


def _build(num_classes=3, **model):
    cfg = ModelConfig(arch="dense", backbone="resnet18", neck_channels=32, channels_last=False, **model)
    return build_detector(cfg, LOSS, PostprocessConfig(), ANCHORS, num_classes)


def test_outputs_prior_bias_and_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model, criterion, post = _build(extra_levels=0)
    assert isinstance(model, DenseDetector) and isinstance(criterion, DenseLoss)
    assert post.score_activation == "sigmoid"
    images, targets = _synthetic_batch(2)
    targets[0] = {"boxes": torch.cat([targets[0]["boxes"], torch.tensor([[4.0, 4.0, 92.0, 90.0]])]),
                  "labels": torch.cat([targets[0]["labels"], torch.tensor([2])])}  # a positive on the coarsest level
    out = model(images)
    num_anchors = 12 * 12 + 6 * 6 + 3 * 3
    assert out["cls_logits"].shape == (2, num_anchors, 3) and out["bbox_deltas"].shape == (2, num_anchors, 4)
    assert out["num_anchors_per_level"].tolist() == [144, 36, 9]
    assert torch.allclose(model.head.cls_out.bias, torch.full((3,), -math.log(99.0)))
    assert abs(float(torch.sigmoid(out["cls_logits"].detach()).mean()) - 0.01) < 0.005  # starts at the prior
    criterion(out, targets)["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not missing


@pytest.mark.parametrize(("neck", "extra"), [("fpn", 0), ("pan", 1)])
def test_neck_variants_give_one_level_per_anchor_level(neck, extra):
    anchors = AnchorConfig(style="sizes", image_size=(SIZE, SIZE), sizes=tuple((24 * 2**i,) for i in range(3 + extra)),
                           aspect_ratios=((1.0,),), steps=None)
    model, _, _ = build_detector(ModelConfig(arch="dense", neck=neck, extra_levels=extra, neck_channels=16,
                                             channels_last=False), LOSS, PostprocessConfig(), anchors, 2)
    assert model.feature_sizes((SIZE, SIZE)) == [(12, 12), (6, 6), (3, 3), (2, 2)][: 3 + extra]


def test_focal_losses_match_their_formulas():
    logits = torch.tensor([-2.0, 0.0, 3.0])
    target = torch.tensor([0.0, 0.6, 1.0])
    p = torch.sigmoid(logits)
    bce = -(target * torch.log(p) + (1 - target) * torch.log(1 - p))
    assert torch.allclose(quality_focal_loss(logits, target, 2.0), bce * (target - p).abs() ** 2)
    binary = torch.tensor([0.0, 1.0, 1.0])
    p_t = torch.where(binary > 0, p, 1 - p)
    alpha_t = torch.where(binary > 0, 0.25, 0.75)
    bce_b = -torch.log(p_t)
    assert torch.allclose(sigmoid_focal_loss(logits, binary), alpha_t * (1 - p_t) ** 2 * bce_b)


def test_qfl_targets_are_the_ious_of_the_positives_at_their_class():
    torch.manual_seed(0)
    model, criterion, _ = _build()
    images, targets = _synthetic_batch(2)
    out = {k: v.detach() for k, v in model(images).items()}
    seen = {}

    def spy(logits, target, beta):
        seen["target"] = target
        return quality_focal_loss(logits, target, beta)

    import cvkit.losses.dense as dense

    original = dense.quality_focal_loss
    dense.quality_focal_loss = spy
    try:
        criterion(out, targets)
    finally:
        dense.quality_focal_loss = original
    target = seen["target"]  # (B, A, C)
    assert ((target > 0).sum(-1) <= 1).all()  # one class per positive anchor
    assert target.max() <= 1 and target.min() >= 0 and (target > 0).any()
    labels_seen = {int(c) for c in torch.nonzero(target)[:, 2]}
    assert labels_seen <= {int(label) for t in targets for label in t["labels"]}


def test_a_checkpoint_with_other_classes_reuses_everything_but_the_class_convolution(tmp_path):
    torch.manual_seed(0)
    source, _, _ = _build(num_classes=3)
    path = tmp_path / "dense.pt"
    torch.save({"model": source.state_dict()}, path)
    model, _, _ = _build(num_classes=5, pretrained=str(path))
    for key, value in model.state_dict().items():
        if key.startswith("head.cls_out."):
            assert value.shape[0] == 5
        else:
            assert torch.equal(value, source.state_dict()[key]), key


def test_a_per_level_head_has_its_own_convolutions_per_level_and_the_prior_bias_on_each():
    torch.manual_seed(0)
    shared, criterion, _ = _build(num_classes=3)
    per_level, _, _ = _build(num_classes=3, head_shared=False)
    head_params = [sum(p.numel() for n, p in m.named_parameters() if n.startswith("head."))
                   for m in (shared, per_level)]
    norms = sum(p.numel() for n, p in shared.named_parameters() if n.startswith("head.") and ".norms." in n)
    assert head_params[1] - norms == 3 * (head_params[0] - norms)  # every conv three times, the norms as before
    assert not any(".convs." in n for n, _ in per_level.named_parameters())
    for level in range(3):
        assert torch.allclose(per_level.head.cls_outs[level].bias, torch.full((3,), -math.log(99.0)))
    images, targets = _synthetic_batch(2)
    out = per_level(images)
    assert out["cls_logits"].shape == shared(images)["cls_logits"].shape
    # level l's outputs depend on level l's convolutions only
    criterion(out, targets)["loss"].backward()
    per_level.zero_grad()
    out = per_level(images)
    start, stop = 144, 144 + 36  # the anchors of level 1 (12x12, 6x6, 3x3 maps)
    out["cls_logits"][:, start:stop].sum().backward()
    grads = [per_level.head.cls_outs[level].weight.grad for level in range(3)]
    assert grads[1] is not None and grads[1].abs().sum() > 0
    assert all(g is None or not g.any() for g in (grads[0], grads[2]))


def test_loss_falls_and_objects_are_found_after_a_short_overfit():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        torch.manual_seed(0)
        model, criterion, post = _build()
        images, targets = _synthetic_batch()
        optimizer = torch.optim.AdamW(model.param_groups(lr=3e-3), lr=3e-3)
        history = []
        for _ in range(40):
            losses = criterion(model(images), targets)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimizer.step()
            history.append(float(losses["loss"].detach()))
        assert history[-1] < 0.3 * history[0], history
        with torch.no_grad():
            dets = post(model.eval()(images), [[SIZE, SIZE]] * 3)
        best = torch.cat([box_iou(t["boxes"], d["boxes"][:10]).max(dim=1).values for d, t in zip(dets, targets)])
        assert (best > 0.5).float().mean() >= 0.8, best
        print(f"dense overfit: {history[0]:.3f} -> {history[-1]:.3f} in {time.perf_counter() - start:.1f}s")
    finally:
        torch.set_num_threads(threads)
