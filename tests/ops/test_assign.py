"""match_anchors against torchvision's SSDMatcher / Matcher per image; hard-negative mining; padding."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.models.detection._utils import Matcher, SSDMatcher
from torchvision.ops import box_iou as tv_box_iou

from cvkit.ops import (
    BACKGROUND,
    IGNORE,
    AnchorGenerator,
    MatcherConfig,
    box_iou,
    hard_negative_mining,
    match_anchors,
    pad_gt_boxes,
)
from cvkit.ops._kernels.cpu_assign import MODE_NONE, MODE_RCNN, MODE_SSD, match_cpu

SSD300_FEATURES = [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]
BACKENDS = ["numba", "torch"]


@pytest.fixture(scope="module")
def ssd_anchors():
    return AnchorGenerator.ssd300()(SSD300_FEATURES, (300, 300)).clone()


def tv_match(anchors, gt_boxes, gt_valid, low_quality, pos, neg, iou_fn=tv_box_iou):
    """The oracle: torchvision's matcher image by image on the valid rows, mapped back to padded indices."""
    out = []
    for b in range(gt_boxes.shape[0]):
        idx = torch.nonzero(gt_valid[b]).flatten()
        if idx.numel() == 0:
            out.append(torch.full((anchors.shape[0],), -1, dtype=torch.long))
            continue
        quality = iou_fn(gt_boxes[b, idx].float(), anchors.float())
        if low_quality == "ssd":
            assert pos == neg
            m = SSDMatcher(pos)(quality)
        else:
            m = Matcher(pos, neg, allow_low_quality_matches=low_quality == "rcnn")(quality)
        out.append(torch.where(m >= 0, idx[m.clamp(min=0)], m))
    return torch.stack(out)


def clustered_gt(anchors, batch, num_gt, generator, jitter=0.3, with_padding=True):
    """Detector-like ground truth: perturbed anchors (IoUs near every threshold), random padding rows."""
    pick = torch.randint(0, anchors.shape[0], (batch, num_gt), generator=generator)
    base = anchors[pick]
    wh = (base[..., 2:] - base[..., :2]).clamp(min=1)
    noise = (torch.rand(batch, num_gt, 4, generator=generator) - 0.5) * jitter
    boxes = base + noise * wh.repeat(1, 1, 2)
    boxes = torch.cat(
        (torch.minimum(boxes[..., :2], boxes[..., 2:]), torch.maximum(boxes[..., :2], boxes[..., 2:])), -1
    )
    valid = torch.ones(batch, num_gt, dtype=torch.bool)
    if with_padding:
        valid = torch.rand(batch, num_gt, generator=generator) > 0.25
        boxes = torch.where(valid[..., None], boxes, torch.zeros_like(boxes))
    return boxes, valid


def assert_same_as_oracle(anchors, gt, valid, low_quality, pos, neg, backend):
    result = match_anchors(anchors, gt, valid, pos_thresh=pos, neg_thresh=neg, low_quality=low_quality, backend=backend)
    expected = tv_match(anchors, gt, valid, low_quality, pos, neg)
    assert torch.equal(result.matched_idxs, expected)
    return result


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("num_gt", [1, 10, 50])
def test_ssd_matcher_clustered(ssd_anchors, backend, num_gt):
    g = torch.Generator().manual_seed(num_gt)
    gt, valid = clustered_gt(ssd_anchors, 6, num_gt, g)
    assert_same_as_oracle(ssd_anchors, gt, valid, "ssd", 0.5, 0.5, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("low_quality", ["rcnn", "none"])
@pytest.mark.parametrize("thresholds", [(0.7, 0.3), (0.5, 0.4), (0.5, 0.5)])
def test_matcher_thresholds_and_low_quality(ssd_anchors, backend, low_quality, thresholds):
    g = torch.Generator().manual_seed(7)
    gt, valid = clustered_gt(ssd_anchors, 5, 20, g, jitter=0.6)
    result = assert_same_as_oracle(ssd_anchors, gt, valid, low_quality, *thresholds, backend)
    if thresholds[0] != thresholds[1]:
        assert (result.matched_idxs == IGNORE).any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_uniform_random_boxes(backend):
    g = torch.Generator().manual_seed(3)
    xy = torch.rand(700, 2, generator=g) * 500
    anchors = torch.cat((xy, xy + torch.rand(700, 2, generator=g) * 150 + 1), 1)
    xy = torch.rand(4, 30, 2, generator=g) * 500
    gt = torch.cat((xy, xy + torch.rand(4, 30, 2, generator=g) * 200 + 1), -1)
    valid = torch.ones(4, 30, dtype=torch.bool)
    for low_quality, pos, neg in [("ssd", 0.5, 0.5), ("rcnn", 0.6, 0.3), ("none", 0.4, 0.2)]:
        assert_same_as_oracle(anchors, gt, valid, low_quality, pos, neg, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_ground_truth(ssd_anchors, backend):
    for gt, valid in [
        (torch.zeros(3, 0, 4), torch.zeros(3, 0, dtype=torch.bool)),
        (torch.rand(3, 4, 4) * 100, torch.zeros(3, 4, dtype=torch.bool)),
    ]:
        result = match_anchors(ssd_anchors, gt, valid, backend=backend)
        assert result.matched_idxs.shape == (3, ssd_anchors.shape[0])
        assert (result.matched_idxs == BACKGROUND).all()
        assert (result.matched_iou == 0).all()
        assert (result.gt_best_anchor == -1).all() and (result.gt_best_iou == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_ground_truth_and_one_image_without(ssd_anchors, backend):
    gt = torch.tensor([[[100.0, 80.0, 180.0, 200.0]], [[0.0, 0.0, 0.0, 0.0]]])
    valid = torch.tensor([[True], [False]])
    result = assert_same_as_oracle(ssd_anchors, gt, valid, "ssd", 0.5, 0.5, backend)
    assert (result.matched_idxs[1] == BACKGROUND).all()
    assert (result.matched_idxs[0] == 0).sum() >= 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_many_overlapping_and_duplicate_ground_truths(ssd_anchors, backend):
    # duplicates tie for every anchor (the lowest index wins) and share their best anchor (the last one keeps it)
    box = torch.tensor([120.0, 90.0, 200.0, 170.0])
    shifted = [box + torch.tensor([d, d, d, d]) for d in (0.0, 0.0, 2.0, 4.0, 0.0, 1.0)]
    gt = torch.stack(shifted)[None].repeat(2, 1, 1)
    valid = torch.ones(2, 6, dtype=torch.bool)
    valid[1, 0] = False
    for low_quality, pos, neg in [("ssd", 0.5, 0.5), ("rcnn", 0.5, 0.4), ("none", 0.5, 0.3)]:
        assert_same_as_oracle(ssd_anchors, gt, valid, low_quality, pos, neg, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_between_identical_anchors(backend):
    # identical anchors tie in each ground truth's argmax: the lowest anchor index is its best anchor
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 3 + [[20.0, 20.0, 30.0, 30.0]] * 2 + [[0.0, 0.0, 40.0, 40.0]])
    gt = torch.tensor([[[2.0, 2.0, 12.0, 12.0], [21.0, 21.0, 29.0, 29.0], [0.0, 0.0, 10.0, 10.0]]])
    valid = torch.ones(1, 3, dtype=torch.bool)
    for low_quality, pos, neg in [("ssd", 0.5, 0.5), ("ssd", 0.9, 0.9), ("rcnn", 0.9, 0.5), ("none", 0.5, 0.5)]:
        result = assert_same_as_oracle(anchors, gt, valid, low_quality, pos, neg, backend)
    assert result.gt_best_anchor[0].tolist() == [0, 3, 0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_iou_exactly_at_the_thresholds(backend):
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.2], [50.0, 50.0, 60.0, 60.0]])
    # IoU 0.5 exactly with anchor 0 -> positive (>=); 50 / 102 < 0.5 with anchor 1
    gt = torch.tensor([[[0.0, 0.0, 10.0, 5.0]]])
    valid = torch.ones(1, 1, dtype=torch.bool)
    result = match_anchors(anchors, gt, valid, pos_thresh=0.5, low_quality="none", backend=backend)
    assert result.matched_idxs[0].tolist() == [0, BACKGROUND, BACKGROUND]
    result = match_anchors(anchors, gt, valid, pos_thresh=0.6, neg_thresh=0.5, low_quality="none", backend=backend)
    assert result.matched_idxs[0].tolist() == [IGNORE, BACKGROUND, BACKGROUND]
    # thresholds are compared in float32, like torch's tensor-vs-scalar comparisons
    assert_same_as_oracle(anchors, gt, valid, "none", 0.5, 0.49, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_degenerate_boxes(backend):
    # zero-area and far-away ground truth (IoU 0 everywhere: SSD gives them anchor 0, as torch's argmax does),
    # zero-area and inverted anchors
    anchors = torch.tensor(
        [
            [5.0, 5.0, 5.0, 9.0],
            [0.0, 0.0, 10.0, 10.0],
            [8.0, 8.0, 2.0, 2.0],
            [5.0, 5.0, 25.0, 25.0],
            [0.0, 0.0, 0.0, 0.0],
        ]
    )
    gt = torch.tensor([[[3.0, 3.0, 3.0, 8.0], [500.0, 500.0, 510.0, 510.0], [4.0, 4.0, 20.0, 20.0]]])
    valid = torch.ones(1, 3, dtype=torch.bool)
    for low_quality, pos, neg in [("ssd", 0.5, 0.5), ("rcnn", 0.5, 0.3), ("none", 0.5, 0.5)]:
        result = match_anchors(
            anchors, gt, valid, pos_thresh=pos, neg_thresh=neg, low_quality=low_quality, backend=backend
        )
        expected = tv_match(anchors, gt, valid, low_quality, pos, neg, iou_fn=box_iou)  # no NaN for 0/0
        assert torch.equal(result.matched_idxs, expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_finite_ground_truth_is_ignored(ssd_anchors, backend):
    g = torch.Generator().manual_seed(5)
    gt, _ = clustered_gt(ssd_anchors, 2, 6, g, with_padding=False)
    bad = gt.clone()
    bad[0, 2, 1] = float("nan")
    bad[1, 4, 3] = float("inf")
    valid = torch.ones(2, 6, dtype=torch.bool)
    masked = valid.clone()
    masked[0, 2] = masked[1, 4] = False
    result = match_anchors(ssd_anchors, bad, valid, backend=backend)
    reference = match_anchors(ssd_anchors, gt, masked, backend=backend)
    assert torch.equal(result.matched_idxs, reference.matched_idxs)
    assert torch.equal(result.matched_iou, reference.matched_iou)


def test_non_finite_anchors_fall_back_to_the_full_scan(ssd_anchors):
    g = torch.Generator().manual_seed(6)
    gt, valid = clustered_gt(ssd_anchors, 3, 10, g)
    anchors = ssd_anchors.clone()
    anchors[17, 2] = float("inf")
    anchors[900, 0] = float("nan")
    numba_result = match_anchors(anchors, gt, valid, backend="numba")
    torch_result = match_anchors(anchors, gt, valid, backend="torch")
    assert torch.equal(numba_result.matched_idxs, torch_result.matched_idxs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_outputs_are_consistent_with_dense_iou(ssd_anchors, backend):
    g = torch.Generator().manual_seed(11)
    gt, valid = clustered_gt(ssd_anchors, 4, 12, g)
    result = match_anchors(ssd_anchors, gt, valid, backend=backend)
    for b in range(4):
        iou = box_iou(gt[b], ssd_anchors)  # [M, A]
        iou[~valid[b]] = -1
        positive = result.matched_idxs[b] >= 0
        anchor_idx = torch.nonzero(positive).flatten()
        matched_gt = result.matched_idxs[b, positive]
        assert valid[b, matched_gt].all()
        assert torch.equal(result.matched_iou[b, positive], iou[matched_gt, anchor_idx])
        assert torch.equal(result.matched_iou[b, ~positive], iou.max(0).values.clamp(min=0)[~positive])
        best, best_anchor = iou.max(1)
        assert torch.equal(result.gt_best_iou[b][valid[b]], best[valid[b]])
        assert torch.equal(result.gt_best_anchor[b][valid[b]], best_anchor[valid[b]])
        assert (result.gt_best_anchor[b][~valid[b]] == -1).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_other_dtypes(ssd_anchors, dtype):
    g = torch.Generator().manual_seed(12)
    # one image: the per-image kernel is the same for any batch, and this skips compiling the float64
    # multi-threaded variant (seconds of JIT on a cold cache)
    gt, valid = clustered_gt(ssd_anchors, 1, 30, g)
    anchors, gt = ssd_anchors.to(dtype), gt.to(dtype)
    a, b = match_anchors(anchors, gt, valid, backend="numba"), match_anchors(anchors, gt, valid, backend="torch")
    assert torch.equal(a.matched_idxs, b.matched_idxs)
    if dtype == torch.float64:
        assert a.matched_iou.dtype == torch.float64
        iou_fn = lambda x, y: tv_box_iou(x.double(), y.double())  # noqa: E731
        expected = tv_match(anchors.double(), gt.double(), valid, "ssd", 0.5, 0.5, iou_fn=iou_fn)
        assert torch.equal(a.matched_idxs, expected)
    else:  # float16 is computed in float32
        assert a.matched_iou.dtype == torch.float32
        assert torch.equal(a.matched_idxs, tv_match(anchors.float(), gt.float(), valid, "ssd", 0.5, 0.5))


def test_inputs_not_mutated_and_validation(ssd_anchors):
    g = torch.Generator().manual_seed(13)
    gt, valid = clustered_gt(ssd_anchors, 2, 5, g)
    copies = ssd_anchors.clone(), gt.clone(), valid.clone()
    match_anchors(ssd_anchors, gt, valid)
    match_anchors(ssd_anchors, gt, valid, backend="torch")
    assert all(torch.equal(x, y) for x, y in zip(copies, (ssd_anchors, gt, valid)))
    with pytest.raises(ValueError, match=r"\[B, M, 4\]"):
        match_anchors(ssd_anchors, gt[0])
    with pytest.raises(ValueError, match="gt_valid must have shape"):
        match_anchors(ssd_anchors, gt, valid[:, :3])
    with pytest.raises(ValueError, match="neg_thresh"):
        match_anchors(ssd_anchors, gt, pos_thresh=0.4, neg_thresh=0.5)
    with pytest.raises(ValueError, match="low_quality"):
        match_anchors(ssd_anchors, gt, low_quality="yes")


def test_matcher_config():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 6.0]])
    gt = torch.tensor([[[0.0, 0.0, 10.0, 5.0]]])
    cfg = MatcherConfig(pos_thresh=0.7, neg_thresh=0.3, low_quality="none")
    assert cfg.match(anchors, gt).matched_idxs[0].tolist() == [IGNORE, 0]


def test_index_kernel_equals_full_scan_on_varied_anchor_sizes():
    # anchors of sizes from 1 px to the whole image, in many size classes, shared by the batch
    g = torch.Generator().manual_seed(21)
    n = 3000
    centres = torch.rand(n, 2, generator=g) * 640
    sizes = torch.exp(torch.rand(n, 2, generator=g) * 6.5)
    anchors = torch.cat((centres - sizes / 2, centres + sizes / 2), 1)
    anchors[::97, 2:] = anchors[::97, :2]  # some zero-size anchors
    gt, valid = clustered_gt(anchors, 8, 25, g, jitter=0.8)
    for mode in (MODE_SSD, MODE_RCNN, MODE_NONE):
        fast = match_cpu(anchors, gt, valid, 0.5, 0.4, mode)
        full = match_cpu(anchors, gt, valid, 0.5, 0.4, mode, brute=True)
        for x, y in zip(fast, full):
            assert torch.equal(x, y)


box_st = st.tuples(
    st.integers(0, 60), st.integers(0, 60), st.integers(0, 40), st.integers(0, 40)
).map(lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]])


@settings(max_examples=80, deadline=None)
@given(
    anchors=st.lists(box_st, min_size=1, max_size=40),
    gts=st.lists(st.lists(box_st, min_size=0, max_size=8), min_size=1, max_size=3),
    mode=st.sampled_from(["ssd", "rcnn", "none"]),
    thresholds=st.sampled_from([(0.5, 0.5), (0.5, 0.3), (0.25, 0.25)]),
)
def test_property_against_oracle_on_integer_grids(anchors, gts, mode, thresholds):
    # small integer boxes produce exact IoU ties, zero-area boxes and duplicates
    anchors = torch.tensor(anchors, dtype=torch.float32)
    gt, valid = pad_gt_boxes([torch.tensor(b, dtype=torch.float32).reshape(-1, 4) for b in gts])
    pos, neg = (thresholds[0], thresholds[0]) if mode == "ssd" else thresholds
    expected = tv_match(anchors, gt, valid, mode, pos, neg, iou_fn=box_iou)
    for backend in BACKENDS:
        result = match_anchors(anchors, gt, valid, pos_thresh=pos, neg_thresh=neg, low_quality=mode, backend=backend)
        assert torch.equal(result.matched_idxs, expected)
    brute = match_cpu(anchors, gt, valid, pos, neg, {"none": 0, "ssd": 1, "rcnn": 2}[mode], brute=True)
    assert torch.equal(brute[0], expected)
    if mode == "ssd":
        # every ground truth has a positive unless a later ground truth took its (shared) best anchor
        result = match_anchors(anchors, gt, valid, pos_thresh=pos)
        for b in range(gt.shape[0]):
            for m in torch.nonzero(valid[b]).flatten().tolist():
                if (result.matched_idxs[b] == m).any():
                    continue
                best = result.gt_best_anchor[b, m]
                later = [k for k in range(m + 1, gt.shape[1]) if valid[b, k] and result.gt_best_anchor[b, k] == best]
                assert later, f"ground truth {m} of image {b} has no positive"


def test_every_ground_truth_gets_a_positive_with_low_quality_on(ssd_anchors):
    # tiny boxes SSD300's anchors cannot reach with IoU 0.5: low-quality matching still gives each a positive
    g = torch.Generator().manual_seed(31)
    xy = torch.rand(4, 30, 2, generator=g) * 280
    gt = torch.cat((xy, xy + torch.rand(4, 30, 2, generator=g) * 6 + 2), -1)
    with_lq = match_anchors(ssd_anchors, gt, low_quality="ssd")
    without = match_anchors(ssd_anchors, gt, low_quality="none")
    has_positive = lambda r: torch.stack([(r.matched_idxs == m).any(1) for m in range(30)], 1)  # noqa: E731
    distinct = torch.tensor([len(set(r.tolist())) == 30 for r in with_lq.gt_best_anchor])
    assert has_positive(with_lq)[distinct].all()
    assert not has_positive(without).all()


def test_pad_gt_boxes():
    boxes, valid = pad_gt_boxes([torch.ones(2, 4), torch.zeros(0, 4), torch.full((3, 4), 2.0)])
    assert boxes.shape == (3, 3, 4) and valid.tolist() == [[True, True, False], [False] * 3, [True] * 3]
    assert (boxes[0, 2] == 0).all()
    boxes, valid = pad_gt_boxes([torch.zeros(0, 4)], min_size=2)
    assert boxes.shape == (1, 2, 4) and not valid.any()
    with pytest.raises(ValueError):
        pad_gt_boxes([])


# ---------------------------------------------------------------------------------------------
# Hard-negative mining
# ---------------------------------------------------------------------------------------------


def tv_ssd_negatives(cls_loss, positive, ratio):
    """torchvision SSDHead.compute_loss's selection, written out."""
    num_negative = ratio * positive.sum(1, keepdim=True)
    negative_loss = cls_loss.clone()
    negative_loss[positive] = -float("inf")
    _, idx = negative_loss.sort(1, descending=True)
    return idx.sort(1)[1] < num_negative


@pytest.mark.parametrize("ratio", [3, 1, 0])
def test_hard_negative_mining_equals_torchvision_ssd(ratio):
    g = torch.Generator().manual_seed(ratio)
    loss = torch.rand(6, 500, generator=g)
    positive = torch.rand(6, 500, generator=g) < torch.tensor([0.0, 0.01, 0.05, 0.2, 0.3, 0.9])[:, None]
    got = hard_negative_mining(loss, positive, ratio)
    expected = tv_ssd_negatives(loss, positive, ratio) & ~positive
    assert torch.equal(got, expected)
    num_pos = positive.sum(1)
    assert torch.equal(got.sum(1), torch.minimum(ratio * num_pos, (~positive).sum(1)))
    # the chosen negatives are the hardest: any unchosen negative has a loss <= every chosen one
    for b in range(6):
        chosen, rest = loss[b][got[b]], loss[b][~got[b] & ~positive[b]]
        if chosen.numel() and rest.numel():
            assert rest.max() <= chosen.min()


def test_hard_negative_mining_ties_ignore_and_minimum():
    loss = torch.tensor([[1.0, 5.0, 5.0, 5.0, 0.5, 9.0, 5.0]])
    positive = torch.tensor([[True, False, False, False, False, False, False]])
    ignore = torch.tensor([[False, False, False, False, False, True, False]])
    # 2 negatives per positive; anchor 5 (highest loss) is ignored; ties by lowest index
    got = hard_negative_mining(loss, positive, 2, ignore_mask=ignore)
    assert torch.nonzero(got[0]).flatten().tolist() == [1, 2]
    none = torch.zeros_like(positive)
    assert not hard_negative_mining(loss, none).any()
    assert torch.nonzero(hard_negative_mining(loss, none, min_negatives=1)[0]).flatten().tolist() == [5]
    with pytest.raises(ValueError):
        hard_negative_mining(loss, positive[:, :3])


@pytest.mark.cuda
def test_cuda_matches_cpu(ssd_anchors):
    g = torch.Generator().manual_seed(41)
    gt, valid = clustered_gt(ssd_anchors, 8, 30, g)
    for low_quality, pos, neg in [("ssd", 0.5, 0.5), ("rcnn", 0.6, 0.4), ("none", 0.5, 0.3)]:
        kwargs = {"pos_thresh": pos, "neg_thresh": neg, "low_quality": low_quality}
        cpu = match_anchors(ssd_anchors, gt, valid, **kwargs)
        cuda = match_anchors(ssd_anchors.cuda(), gt.cuda(), valid.cuda(), **kwargs)
        for x, y in zip(cpu, cuda, strict=True):
            assert torch.equal(x, y.cpu())
