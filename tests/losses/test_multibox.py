"""MultiBoxLoss against a slow per-image reference built from torchvision's SSDMatcher and BoxCoder."""

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection import _utils as det_utils
from torchvision.ops import box_iou, generalized_box_iou

from cvkit.losses import LossConfig, MultiBoxLoss, build_targets
from cvkit.ops import MatcherConfig


def _anchors() -> torch.Tensor:
    """A 6x6 grid of 6 shapes over a 96x96 image: 216 anchors."""
    centres = (torch.arange(6, dtype=torch.float32) + 0.5) * 16
    cy, cx = torch.meshgrid(centres, centres, indexing="ij")
    out = []
    for w, h in ((16.0, 16.0), (24.0, 24.0), (32.0, 24.0), (24.0, 32.0), (40.0, 40.0), (56.0, 56.0)):
        out.append(torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1).reshape(-1, 4))
    return torch.cat(out)


def _case(num_classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    anchors = _anchors()
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 40.0, 38.0], [50.0, 50.0, 90.0, 92.0]]), "labels": torch.tensor([2, 0])},
        {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)},  # an image without objects
        {"boxes": torch.tensor([[30.0, 20.0, 62.0, 45.0]]), "labels": torch.tensor([1])},
    ]
    outputs = {
        "cls_logits": torch.randn(3, anchors.shape[0], num_classes + 1, generator=g, requires_grad=True),
        "bbox_deltas": torch.randn(3, anchors.shape[0], 4, generator=g, requires_grad=True),
        "anchors": anchors,
    }
    return outputs, targets


def reference_loss(outputs, targets, neg_pos_ratio=3, box_loss="smooth_l1", cls_loss="ce", alpha=0.25, gamma=2.0):
    """One image at a time, with torchvision's SSDMatcher / BoxCoder and an explicit sorted list of negatives."""
    matcher = det_utils.SSDMatcher(0.5)
    coder = det_utils.BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    anchors = outputs["anchors"]
    total_cls, total_box, total_pos, num_negatives = 0.0, 0.0, 0, []
    for b, target in enumerate(targets):
        logits = outputs["cls_logits"][b]
        deltas = outputs["bbox_deltas"][b]
        if target["boxes"].numel() == 0:
            matched = torch.full((anchors.shape[0],), -1, dtype=torch.int64)
        else:
            matched = matcher(box_iou(target["boxes"], anchors))
        positive = matched >= 0
        labels = torch.zeros(anchors.shape[0], dtype=torch.int64)
        labels[positive] = target["labels"][matched[positive]] + 1  # background is logit 0
        ce = F.cross_entropy(logits, labels, reduction="none")
        num_pos = int(positive.sum())
        if cls_loss == "ce":
            candidates = sorted((-float(ce[a].detach()), a) for a in range(anchors.shape[0]) if not positive[a])
            negatives = [a for _, a in candidates[: neg_pos_ratio * num_pos]]
            num_negatives.append(len(negatives))
            total_cls = total_cls + ce[positive].sum() + sum((ce[a] for a in negatives), torch.tensor(0.0))
        else:
            p_t = torch.exp(-ce)
            alpha_t = torch.where(positive, torch.tensor(alpha), torch.tensor(1 - alpha))
            total_cls = total_cls + (alpha_t * (1 - p_t) ** gamma * ce).sum()
        if num_pos:
            gt = target["boxes"][matched[positive]]
            if box_loss == "smooth_l1":
                target_deltas = coder.encode_single(gt, anchors[positive])
                total_box = total_box + F.smooth_l1_loss(deltas[positive], target_deltas, reduction="sum")
            else:
                pred = coder.decode_single(deltas[positive], anchors[positive])
                total_box = total_box + (1 - torch.diag(generalized_box_iou(pred, gt))).sum()
        total_pos += num_pos
    n = max(1, total_pos)
    return total_cls / n, total_box / n, total_pos, num_negatives


def test_ce_smooth_l1_matches_reference_with_3_to_1_mining_and_an_empty_image():
    outputs, targets = _case()
    losses = MultiBoxLoss(LossConfig(), MatcherConfig())(outputs, targets)
    ref_cls, ref_box, num_pos, num_negatives = reference_loss(outputs, targets)
    assert num_pos > 3
    per_image_pos = [int(p) for p in build_targets(outputs["anchors"], targets, MatcherConfig()).positive.sum(1)]
    assert num_negatives == [3 * p for p in per_image_pos] and per_image_pos[1] == 0
    torch.testing.assert_close(losses["loss_cls"], ref_cls, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(losses["loss_box"], ref_box, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(losses["loss"], ref_cls + ref_box, rtol=1e-5, atol=1e-5)
    assert set(losses) == {"loss", "loss_cls", "loss_box"} and all(v.dim() == 0 for v in losses.values())


@pytest.mark.parametrize("ratio", [1, 2, 5])
def test_other_negative_ratios(ratio):
    outputs, targets = _case(seed=1)
    losses = MultiBoxLoss(LossConfig(neg_pos_ratio=ratio), MatcherConfig())(outputs, targets)
    ref_cls, _, _, _ = reference_loss(outputs, targets, neg_pos_ratio=ratio)
    torch.testing.assert_close(losses["loss_cls"], ref_cls, rtol=1e-5, atol=1e-5)


def test_giou_and_focal_match_reference():
    outputs, targets = _case(seed=2)
    with torch.no_grad():
        outputs["bbox_deltas"].mul_(0.1)  # moderate deltas: decoded boxes near their anchors
    losses = MultiBoxLoss(LossConfig(box_loss="giou", cls_loss="focal"), MatcherConfig())(outputs, targets)
    ref_cls, ref_box, _, _ = reference_loss(outputs, targets, box_loss="giou", cls_loss="focal")
    torch.testing.assert_close(losses["loss_cls"], ref_cls, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(losses["loss_box"], ref_box, rtol=1e-5, atol=1e-5)


def test_gradients_reach_logits_of_positives_and_mined_negatives_only():
    outputs, targets = _case()
    losses = MultiBoxLoss()(outputs, targets)
    losses["loss"].backward()
    touched = outputs["cls_logits"].grad.abs().sum(-1) > 0  # (B, A)
    matched = build_targets(outputs["anchors"], targets, MatcherConfig())
    num_pos = matched.positive.sum(1)
    assert torch.equal(touched.sum(1), 4 * num_pos)  # each positive plus its 3 negatives
    assert not touched[1].any()  # the empty image contributes nothing to ce
    box_touched = outputs["bbox_deltas"].grad.abs().sum(-1) > 0
    assert torch.equal(box_touched, matched.positive)


def test_a_batch_without_objects_gives_zero_and_finite_gradients():
    outputs, _ = _case()
    empty = [{"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)}] * 3
    losses = MultiBoxLoss()(outputs, empty)
    assert losses["loss"].item() == 0.0 and losses["loss_box"].item() == 0.0
    losses["loss"].backward()
    assert torch.isfinite(outputs["cls_logits"].grad).all()
    focal = MultiBoxLoss(LossConfig(cls_loss="focal"))(outputs, empty)
    assert focal["loss_cls"].item() > 0  # focal: every negative counts, normalized by max(1, 0)


def test_perfect_predictions_give_near_zero_loss_and_background_is_logit_0():
    outputs, targets = _case()
    matched = build_targets(outputs["anchors"], targets, MatcherConfig())
    logits = torch.full_like(outputs["cls_logits"], -20.0)
    logits.scatter_(2, matched.labels[..., None], 20.0)  # label l -> logit l + 1, background -> logit 0
    anchors = outputs["anchors"]
    deltas = det_utils.BoxCoder((10.0, 10.0, 5.0, 5.0)).encode_single(
        matched.matched_boxes.reshape(-1, 4), anchors.repeat(3, 1)
    ).reshape(3, -1, 4)
    deltas = torch.where(matched.positive[..., None], deltas, torch.zeros_like(deltas))
    losses = MultiBoxLoss()({"cls_logits": logits, "bbox_deltas": deltas, "anchors": anchors}, targets)
    assert losses["loss"].item() < 1e-6
    shifted = MultiBoxLoss()({"cls_logits": logits.roll(1, dims=2), "bbox_deltas": deltas, "anchors": anchors}, targets)
    assert shifted["loss_cls"].item() > 10  # off-by-one label convention would be caught


def test_ignore_band_anchors_are_neither_positive_nor_negative():
    outputs, targets = _case(seed=3)
    matcher = MatcherConfig(pos_thresh=0.5, neg_thresh=0.3)
    matched = build_targets(outputs["anchors"], targets, matcher)
    assert matched.ignore.any()
    criterion = MultiBoxLoss(LossConfig(neg_pos_ratio=1000), matcher)  # mine every candidate negative
    losses = criterion(outputs, targets)
    losses["loss"].backward()
    touched = outputs["cls_logits"].grad.abs().sum(-1) > 0
    assert not (touched & matched.ignore).any()
    # images with positives: every anchor that is neither positive nor ignored is a negative
    for b in (0, 2):
        assert torch.equal(touched[b], ~matched.ignore[b])


def test_bad_labels_and_batch_mismatch():
    outputs, targets = _case(num_classes=3)
    bad = [dict(t) for t in targets]
    bad[0] = {"boxes": targets[0]["boxes"], "labels": torch.tensor([3, 0])}
    with pytest.raises(ValueError, match=r"labels must be in 0..2"):
        MultiBoxLoss()(outputs, bad)
    with pytest.raises(ValueError, match="3 images"):
        MultiBoxLoss()(outputs, targets[:2])
    assert math.isfinite(MultiBoxLoss()(outputs, targets)["loss"].item())
