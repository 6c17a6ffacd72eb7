"""ATSS assignment against a plain per-image, per-ground-truth reference written from the paper's rule."""

import math

import pytest
import torch

from cvkit.ops import AnchorGenerator
from cvkit.ops.assign import BACKGROUND
from cvkit.ops.atss import atss_assign


def _iou(g, a):
    inter = max(min(g[2], a[2]) - max(g[0], a[0]), 0) * max(min(g[3], a[3]) - max(g[1], a[1]), 0)
    union = (g[2] - g[0]) * (g[3] - g[1]) + (a[2] - a[0]) * (a[3] - a[1]) - inter
    return inter / union if union > 0 else 0.0


def reference(anchors, counts, gt_boxes, gt_valid, topk):
    """Loops over images, ground truths, levels and anchors; no batching."""
    out = []
    for b in range(gt_boxes.shape[0]):
        best = [(-1.0, BACKGROUND)] * anchors.shape[0]  # (iou, m) of the positive match of each anchor
        for m in range(gt_boxes.shape[1]):
            if not gt_valid[b, m]:
                continue
            g = gt_boxes[b, m].tolist()
            gcx, gcy = (g[0] + g[2]) / 2, (g[1] + g[3]) / 2
            candidates, start = [], 0
            for count in counts:
                level = sorted(range(start, start + count), key=lambda a: (
                    math.dist(((anchors[a, 0] + anchors[a, 2]).item() / 2, (anchors[a, 1] + anchors[a, 3]).item() / 2),
                              (gcx, gcy)), a))
                candidates += level[:topk]
                start += count

            ious = [_iou(g, anchors[a].tolist()) for a in candidates]
            mean = sum(ious) / len(ious)
            std = math.sqrt(sum((v - mean) ** 2 for v in ious) / max(len(ious) - 1, 1))
            for a, v in zip(candidates, ious):
                cx, cy = (anchors[a, 0] + anchors[a, 2]).item() / 2, (anchors[a, 1] + anchors[a, 3]).item() / 2
                if v >= mean + std - 1e-6 and g[0] < cx < g[2] and g[1] < cy < g[3] and v > best[a][0]:
                    best[a] = (v, m)
        out.append([m for _, m in best])
    return torch.tensor(out)


def _case(seed, batch=3, num_gt=5):
    g = torch.Generator().manual_seed(seed)
    gen = AnchorGenerator([[32], [64], [128]], [1.0], strides=[8, 16, 32])
    feature_sizes = [(16, 16), (8, 8), (4, 4)]
    anchors = gen(feature_sizes, (128, 128))
    xy = torch.rand(batch, num_gt, 2, generator=g) * 100
    wh = 8 + torch.rand(batch, num_gt, 2, generator=g) * 80
    gt = torch.cat([xy, (xy + wh).clamp(max=128)], -1)
    valid = torch.rand(batch, num_gt, generator=g) > 0.2
    return anchors, gen.num_anchors_per_level(feature_sizes), gt, valid


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("topk", [1, 9])
def test_batched_atss_equals_the_plain_reference(seed, topk):
    anchors, counts, gt, valid = _case(seed)
    result = atss_assign(anchors, counts, gt, valid, topk=topk)
    assert torch.equal(result.matched_idxs, reference(anchors, counts, gt, valid, topk))
    positive = result.matched_idxs >= 0
    iou = torch.stack([torch.zeros(anchors.shape[0])] * gt.shape[0])
    for b in range(gt.shape[0]):
        for a in torch.nonzero(positive[b]).flatten().tolist():
            m = int(result.matched_idxs[b, a])
            from cvkit.ops import box_iou

            iou[b, a] = box_iou(gt[b, m : m + 1], anchors[a : a + 1])[0, 0]
    assert torch.allclose(result.matched_iou[positive], iou[positive])


def test_every_valid_ground_truth_of_a_reasonable_size_gets_a_positive_and_invalid_ones_none():
    anchors, counts, gt, valid = _case(11, batch=4, num_gt=6)
    result = atss_assign(anchors, counts, gt, valid)
    for b in range(gt.shape[0]):
        got = set(result.matched_idxs[b][result.matched_idxs[b] >= 0].tolist())
        assert got <= set(torch.nonzero(valid[b]).flatten().tolist())
    assert (result.gt_best_anchor[~valid] == -1).all()


def test_no_ground_truth_and_no_valid_rows_give_background_everywhere():
    anchors, counts, gt, _ = _case(0)
    empty = atss_assign(anchors, counts, gt[:, :0], None)
    assert empty.matched_idxs.shape == (3, anchors.shape[0]) and (empty.matched_idxs == BACKGROUND).all()
    none = atss_assign(anchors, counts, gt, torch.zeros(gt.shape[:2], dtype=torch.bool))
    assert (none.matched_idxs == BACKGROUND).all()
    with pytest.raises(ValueError, match="must sum"):
        atss_assign(anchors, [1, 2], gt)
