"""The d2l book's anchor API: the book's printed values, and a loop-by-loop reference port as the oracle.

The ``book_*`` functions below restate the semantics of "Dive into Deep Learning", chapter "Anchor
Boxes" (one image at a time, Python loops, the full IoU table), written for these tests.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cvkit.ops import assign_anchor_to_bbox, multibox_detection, multibox_prior, multibox_target

# ---------------------------------------------------------------------------------------------
# Reference port (test oracle)
# ---------------------------------------------------------------------------------------------


def book_anchors_at(i, j, height, width, sizes, ratios):
    """The book's anchors centred on pixel (i, j): ``[n + m - 1, 4]``."""
    cx = (torch.tensor(j, dtype=torch.float32) + 0.5) * (1.0 / width)
    cy = (torch.tensor(i, dtype=torch.float32) + 0.5) * (1.0 / height)
    # the book divides a tensor of sizes by sqrt(r_1), but the Python scalar s_1 by sqrt(r_j):
    # torch computes ``scalar / tensor`` as ``scalar * (1 / tensor)``, which rounds differently
    shapes = [(s, ratios[0], False) for s in sizes] + [(sizes[0], r, True) for r in ratios[1:]]
    out = []
    for s, r, scalar in shapes:
        sq = torch.sqrt(torch.tensor(float(r)))
        w = torch.tensor(float(s)) * sq * height / width
        h = float(s) / sq if scalar else torch.tensor(float(s)) / sq
        out.append(torch.stack((cx + -w / 2, cy + -h / 2, cx + w / 2, cy + h / 2)))
    return torch.stack(out)


def book_multibox_prior(data, sizes, ratios):
    height, width = data.shape[-2:]
    per_pixel = [book_anchors_at(i, j, height, width, sizes, ratios) for i in range(height) for j in range(width)]
    return torch.cat(per_pixel)[None]


def book_box_iou(boxes1, boxes2):
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    lt = torch.max(boxes1[:, None, :2], boxes2[:, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2 - inter
    return torch.where(union > 0, inter / union, torch.zeros_like(inter))  # cvkit: 0 instead of NaN


def book_assign(ground_truth, anchors, iou_threshold=0.5):
    num_anchors, num_gt = anchors.shape[0], ground_truth.shape[0]
    table = book_box_iou(anchors, ground_truth)
    result = torch.full((num_anchors,), -1, dtype=torch.long)
    best, best_idx = torch.max(table, dim=1)
    good = best >= iou_threshold
    result[good] = best_idx[good]
    for _ in range(num_gt):
        flat = int(torch.argmax(table))
        anc, box = flat // num_gt, flat % num_gt
        result[anc] = box
        table[:, box] = -1
        table[anc, :] = -1
    return result


def book_offset_boxes(anchors, assigned, eps=1e-6):
    def centre(b):
        return torch.stack(((b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]), -1)

    a, g = centre(anchors), centre(assigned)
    return torch.cat((10 * (g[:, :2] - a[:, :2]) / a[:, 2:], 5 * torch.log(eps + g[:, 2:] / a[:, 2:])), dim=1)


def book_multibox_target(anchors, labels):
    anchors = anchors.squeeze(0)
    offsets, masks, classes = [], [], []
    for label in labels:
        amap = book_assign(label[:, 1:], anchors)
        mask = (amap >= 0).float().unsqueeze(-1).repeat(1, 4)
        cls = torch.zeros(anchors.shape[0], dtype=torch.long)
        assigned = torch.zeros((anchors.shape[0], 4), dtype=torch.float32)
        rows = torch.nonzero(amap >= 0).flatten()
        cls[rows] = label[amap[rows], 0].long() + 1
        assigned[rows] = label[amap[rows], 1:]
        offsets.append((book_offset_boxes(anchors, assigned) * mask).reshape(-1))
        masks.append(mask.reshape(-1))
        classes.append(cls)
    return torch.stack(offsets), torch.stack(masks), torch.stack(classes)


def book_offset_inverse(anchors, offset_preds):
    acx, acy = (anchors[:, 0] + anchors[:, 2]) / 2, (anchors[:, 1] + anchors[:, 3]) / 2
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    cx = offset_preds[:, 0] * aw / 10 + acx
    cy = offset_preds[:, 1] * ah / 10 + acy
    w = torch.exp(offset_preds[:, 2] / 5) * aw
    h = torch.exp(offset_preds[:, 3] / 5) * ah
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), -1)


def book_nms(boxes, scores, iou_threshold):
    order = torch.argsort(scores, descending=True, stable=True)
    keep = []
    while order.numel() > 0:
        i = order[0]
        keep.append(int(i))
        if order.numel() == 1:
            break
        iou = book_box_iou(boxes[i].reshape(-1, 4), boxes[order[1:]].reshape(-1, 4)).reshape(-1)
        order = order[1:][iou <= iou_threshold]
    return torch.tensor(keep, dtype=torch.long)


def book_multibox_detection(cls_probs, offset_preds, anchors, nms_threshold=0.5, pos_threshold=0.009999999):
    anchors = anchors.squeeze(0)
    num_anchors = cls_probs.shape[2]
    out = []
    for cls_prob, offset_pred in zip(cls_probs, offset_preds):
        conf, class_id = torch.max(cls_prob[1:].float(), 0)
        boxes = book_offset_inverse(anchors, offset_pred.reshape(-1, 4).float())
        keep = book_nms(boxes, conf, nms_threshold)
        non_keep = torch.tensor([a for a in range(num_anchors) if a not in set(keep.tolist())], dtype=torch.long)
        order = torch.cat((keep, non_keep))
        class_id[non_keep] = -1
        class_id, conf, boxes = class_id[order], conf[order], boxes[order]
        below = conf < pos_threshold
        class_id[below] = -1
        conf[below] = 1 - conf[below]
        out.append(torch.cat((class_id.unsqueeze(1), conf.unsqueeze(1), boxes), dim=1))
    return torch.stack(out)


# ---------------------------------------------------------------------------------------------
# The book's printed values
# ---------------------------------------------------------------------------------------------

DOG_CAT_GT = torch.tensor([[0, 0.1, 0.08, 0.52, 0.92], [1, 0.55, 0.2, 0.9, 0.88]])
FIVE_ANCHORS = torch.tensor(
    [
        [0, 0.1, 0.2, 0.3],
        [0.15, 0.2, 0.4, 0.4],
        [0.63, 0.05, 0.88, 0.98],
        [0.66, 0.45, 0.8, 0.8],
        [0.57, 0.3, 0.92, 0.9],
    ]
)


def test_book_561x728_example():
    x = torch.rand(1, 3, 561, 728)
    y = multibox_prior(x, sizes=[0.75, 0.5, 0.25], ratios=[1, 2, 0.5])
    assert y.shape == (1, 2042040, 4)
    boxes = y.reshape(561, 728, 5, 4)
    torch.testing.assert_close(boxes[250, 250, 0, :], torch.tensor([0.06, 0.07, 0.63, 0.82]), atol=0.005, rtol=0)
    # a few pixels in full, against the port (the whole image would take the port minutes)
    for i, j in [(250, 250), (0, 0), (560, 727), (13, 600)]:
        expected = book_anchors_at(i, j, 561, 728, [0.75, 0.5, 0.25], [1, 2, 0.5])
        torch.testing.assert_close(boxes[i, j], expected, rtol=0, atol=0)


def test_book_dog_cat_multibox_target():
    offsets, mask, classes = multibox_target(FIVE_ANCHORS.unsqueeze(0), DOG_CAT_GT.unsqueeze(0))
    assert classes.tolist() == [[0, 1, 2, 0, 2]]
    assert mask.tolist() == [[0.0] * 4 + [1.0] * 8 + [0.0] * 4 + [1.0] * 4]
    printed = torch.tensor(
        [[-0.0, -0.0, -0.0, -0.0, 1.4000, 10.000, 2.5940, 7.1754, -1.2000, 0.26882, 1.6824, -1.5655,
          -0.0, -0.0, -0.0, -0.0, -0.57143, -1.0000, 4.1723e-06, 0.62582]]
    )
    torch.testing.assert_close(offsets, printed, rtol=1e-4, atol=1e-6)
    # the book prints -0.00 for background anchors (offsets times a zero mask)
    assert torch.signbit(offsets[0, [0, 1, 2, 3, 12, 13, 14, 15]]).all()
    assert assign_anchor_to_bbox(DOG_CAT_GT[:, 1:], FIVE_ANCHORS, "cpu").tolist() == [-1, 0, 1, -1, 1]


def test_book_four_anchor_multibox_detection():
    anchors = torch.tensor(
        [[0.1, 0.08, 0.52, 0.92], [0.08, 0.2, 0.56, 0.95], [0.15, 0.3, 0.62, 0.91], [0.55, 0.2, 0.9, 0.88]]
    )
    offset_preds = torch.tensor([0] * anchors.numel())
    cls_probs = torch.tensor([[0] * 4, [0.9, 0.8, 0.7, 0.1], [0.1, 0.2, 0.3, 0.9]])
    output = multibox_detection(
        cls_probs.unsqueeze(0), offset_preds.unsqueeze(0), anchors.unsqueeze(0), nms_threshold=0.5
    )
    printed = torch.tensor(
        [[[0.00, 0.90, 0.10, 0.08, 0.52, 0.92],
          [1.00, 0.90, 0.55, 0.20, 0.90, 0.88],
          [-1.00, 0.80, 0.08, 0.20, 0.56, 0.95],
          [-1.00, 0.70, 0.15, 0.30, 0.62, 0.91]]]
    )
    assert output.shape == (1, 4, 6)
    torch.testing.assert_close(output, printed, atol=0.005, rtol=0)


# ---------------------------------------------------------------------------------------------
# Against the reference port
# ---------------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    height=st.integers(1, 7),
    width=st.integers(1, 7),
    sizes=st.lists(st.sampled_from([0.1, 0.25, 0.5, 0.75, 0.9, 1]), min_size=1, max_size=3),
    ratios=st.lists(st.sampled_from([1, 2, 0.5, 3, 1.5]), min_size=1, max_size=3),
)
def test_multibox_prior_equals_port(height, width, sizes, ratios):
    data = torch.zeros(2, 3, height, width)
    got = multibox_prior(data, sizes, ratios)
    assert got.shape == (1, height * width * (len(sizes) + len(ratios) - 1), 4)
    torch.testing.assert_close(got, book_multibox_prior(data, sizes, ratios), rtol=0, atol=0)


def test_multibox_prior_cache():
    data = torch.zeros(1, 3, 6, 9)
    first = multibox_prior(data, [0.5, 0.25], [1, 2])
    assert multibox_prior(data, [0.5, 0.25], [1, 2]) is first
    expected = first.clone()
    first += 1
    assert torch.equal(multibox_prior(data, [0.5, 0.25], [1, 2]), expected)


box_st = st.tuples(st.integers(0, 20), st.integers(0, 20), st.integers(1, 12), st.integers(1, 12)).map(
    lambda t: [t[0] / 20, t[1] / 20, (t[0] + t[2]) / 20, (t[1] + t[3]) / 20]
)


@settings(max_examples=100, deadline=None)
@given(
    anchors=st.lists(box_st, min_size=1, max_size=12),
    gt=st.lists(box_st, min_size=1, max_size=6),
    threshold=st.sampled_from([0.5, 0.3, 0.7]),
)
def test_assign_anchor_to_bbox_equals_port(anchors, gt, threshold):
    # coarse grids give exact ties; more ground truths than anchors is allowed (then anchor 0 ends on gt 0)
    anchors = torch.tensor(anchors)
    gt = torch.tensor(gt)
    got = assign_anchor_to_bbox(gt, anchors, "cpu", iou_threshold=threshold)
    assert got.dtype == torch.long and got.shape == (anchors.shape[0],)
    assert torch.equal(got, book_assign(gt, anchors, threshold))


def test_assign_more_ground_truths_than_anchors():
    anchors = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])
    gt = torch.tensor([[0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 0.4, 0.4], [0.1, 0.1, 0.2, 0.2], [0.6, 0.6, 0.7, 0.7]])
    got = assign_anchor_to_bbox(gt, anchors, "cpu")
    assert torch.equal(got, book_assign(gt, anchors))
    assert got.tolist() == [0, 0]  # the book's quirk once every anchor row is discarded


def test_multibox_target_equals_port_random_batch():
    g = torch.Generator().manual_seed(0)
    anchors = multibox_prior(torch.zeros(1, 3, 8, 8), [0.3, 0.15], [1, 2, 0.5])
    xy = torch.rand(4, 6, 2, generator=g) * 0.7
    boxes = torch.cat((xy, xy + torch.rand(4, 6, 2, generator=g) * 0.3 + 0.02), -1)
    labels = torch.cat((torch.randint(0, 3, (4, 6, 1), generator=g).float(), boxes), -1)
    got = multibox_target(anchors, labels)
    expected = book_multibox_target(anchors, labels)
    for x, y in zip(got, expected, strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype
    assert torch.equal(got[1], expected[1]) and torch.equal(got[2], expected[2])
    assert (got[2] > 0).sum() > 20  # the batch does assign anchors
    # offsets: equal up to one ulp of torch's log (its vectorized and scalar paths may differ by one ulp)
    torch.testing.assert_close(got[0], expected[0], rtol=2e-7, atol=1e-12)
    assert torch.equal(torch.signbit(got[0]), torch.signbit(expected[0]))


def test_multibox_detection_equals_port_random_batch():
    g = torch.Generator().manual_seed(1)
    anchors = multibox_prior(torch.zeros(1, 3, 5, 5), [0.4, 0.2], [1, 2])
    num_anchors = anchors.shape[1]
    logits = torch.randn(3, 4, num_anchors, generator=g) * 3
    cls_probs = torch.softmax(logits, dim=1)
    offsets = torch.randn(3, num_anchors * 4, generator=g) * 0.5
    for nms_threshold in (0.3, 0.5):
        got = multibox_detection(cls_probs, offsets, anchors, nms_threshold=nms_threshold, pos_threshold=0.2)
        expected = book_multibox_detection(cls_probs, offsets, anchors, nms_threshold, 0.2)
        torch.testing.assert_close(got, expected)
        assert (got[..., 0] == -1).any() and (got[..., 0] >= 0).any()


def test_multibox_detection_validation():
    with pytest.raises(ValueError, match="background"):
        multibox_detection(torch.zeros(1, 1, 4), torch.zeros(1, 16), torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="offset_preds"):
        multibox_detection(torch.zeros(1, 2, 4), torch.zeros(1, 12), torch.zeros(1, 4, 4))
