import pytest
import torch
import torchvision.ops as tvo

from cvkit import ops
from tests.ops._reference import clustered_boxes, py_soft_nms

BACKENDS = ["numba", "torch"]


def _batch(num_images=3, num_anchors=600, num_classes=4, seed=0, class_boxes=False):
    """Detector-like batch with all scores distinct (a shuffled grid of values)."""
    g = torch.Generator().manual_seed(seed)
    boxes = torch.stack([clustered_boxes(num_anchors, num_objects=12, seed=seed + i)[0] for i in range(num_images)])
    if class_boxes:
        boxes = boxes[:, :, None, :] + torch.randn(num_images, num_anchors, num_classes, 4, generator=g) * 3
    total = num_images * num_anchors * num_classes
    scores = (torch.randperm(total, generator=g).float() / total).reshape(num_images, num_anchors, num_classes)
    return boxes, scores


def _torchvision_loop(boxes, scores, score_thresh, iou_thresh, topk, max_det):
    """The usual per-image torchvision postprocess (SSD style): per class threshold + top-k, batched_nms."""
    out = []
    for b in range(scores.shape[0]):
        cand_boxes, cand_scores, cand_labels = [], [], []
        for c in range(scores.shape[2]):
            s = scores[b, :, c]
            idx = torch.where(s > score_thresh)[0]
            idx = idx[torch.sort(s[idx], descending=True, stable=True)[1][:topk]]
            cand_boxes.append(boxes[b, idx] if boxes.dim() == 3 else boxes[b, idx, c])
            cand_scores.append(s[idx])
            cand_labels.append(torch.full_like(idx, c))
        bx, sc, lb = torch.cat(cand_boxes), torch.cat(cand_scores), torch.cat(cand_labels)
        keep = tvo.batched_nms(bx, sc, lb, iou_thresh)[:max_det]
        out.append(torch.cat([bx[keep], sc[keep, None], lb[keep, None].float()], dim=1))
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("class_boxes", [False, True])
@pytest.mark.parametrize(("topk", "max_det"), [(50, 30), (1000, 200), (-1, 500)])
def test_matches_torchvision_per_image_loop(backend, class_boxes, topk, max_det):
    boxes, scores = _batch(class_boxes=class_boxes, seed=topk % 7)
    result = ops.multiclass_nms(boxes, scores, score_thresh=0.3, iou_thresh=0.45, pre_nms_topk=topk,
                                max_detections=max_det, backend=backend)
    expected = _torchvision_loop(boxes, scores, 0.3, 0.45, topk if topk > 0 else 10**9, max_det)
    assert result.detections.shape == (3, max_det, 6)
    for got, want in zip(result.split(), expected):
        assert torch.equal(got, want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_class_agnostic_is_one_nms_over_all_pairs(backend):
    boxes, scores = _batch(num_images=2, seed=3)
    result = ops.multiclass_nms(boxes, scores, score_thresh=0.5, iou_thresh=0.5, pre_nms_topk=300,
                                max_detections=100, class_agnostic=True, backend=backend)
    for b, got in enumerate(result.split()):
        flat = scores[b].reshape(-1)  # index = anchor * C + class
        idx = torch.where(flat > 0.5)[0]
        idx = idx[torch.sort(flat[idx], descending=True, stable=True)[1][:300]]
        anchors, labels = idx // scores.shape[2], idx % scores.shape[2]
        keep = tvo.nms(boxes[b, anchors], flat[idx], 0.5)[:100]
        want = torch.cat([boxes[b, anchors[keep]], flat[idx[keep], None], labels[keep, None].float()], 1)
        assert torch.equal(got, want)


@pytest.mark.parametrize("method", ["linear", "gaussian"])
def test_soft_nms_matches_reference_and_backends_agree(method):
    boxes, scores = _batch(num_images=2, num_anchors=150, num_classes=3, seed=4)
    kwargs = dict(score_thresh=0.2, iou_thresh=0.4, pre_nms_topk=60, max_detections=400, soft_nms=method, sigma=0.5)
    cpu = ops.multiclass_nms(boxes, scores, **kwargs)
    tch = ops.multiclass_nms(boxes, scores, backend="torch", **kwargs)
    assert torch.equal(cpu.num_detections, tch.num_detections)
    torch.testing.assert_close(cpu.detections, tch.detections)
    for b, got in enumerate(cpu.split()):
        want = []
        for c in range(scores.shape[2]):
            s = scores[b, :, c]
            idx = torch.where(s > 0.2)[0]
            idx = idx[torch.sort(s[idx], descending=True, stable=True)[1][:60]]
            for j, score in py_soft_nms(boxes[b, idx], s[idx], 0.4, method, 0.5, 0.2):
                want.append((score, c, int(idx[j])))
        want.sort(key=lambda t: -t[0])
        assert got.shape[0] == len(want)
        torch.testing.assert_close(got[:, 4].double(), torch.tensor([w[0] for w in want], dtype=torch.float64),
                                   atol=1e-5, rtol=1e-5)
        assert sorted(got[:, 5].long().tolist()) == sorted(w[1] for w in want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gaussian_soft_nms_with_tiny_sigma_is_hard_nms_at_zero(backend):
    # Overlaps are either 0 or well above 1e-3, so exp(-iou^2 / 1e-9) is exactly 0 or 1.
    g = torch.Generator().manual_seed(5)
    centres = torch.rand(30, 2, generator=g) * 1000
    boxes = torch.cat([centres, centres + 10 + torch.rand(30, 2, generator=g) * 20], 1)[None]
    boxes = torch.cat([boxes, boxes + torch.rand(1, 30, 4, generator=g) * 4], 1)  # each with an overlapping twin
    scores = torch.rand(1, 60, 2, generator=g) * 0.9 + 0.05
    soft = ops.multiclass_nms(boxes, scores, score_thresh=0.01, iou_thresh=0.0, pre_nms_topk=-1,
                              max_detections=200, soft_nms="gaussian", sigma=1e-9, backend=backend)
    hard = ops.multiclass_nms(boxes, scores, score_thresh=0.01, iou_thresh=0.0, pre_nms_topk=-1,
                              max_detections=200, backend=backend)
    assert torch.equal(soft.num_detections, hard.num_detections)
    assert torch.equal(soft.detections, hard.detections)


@pytest.mark.parametrize("backend", BACKENDS)
def test_padding_counts_and_empty_cases(backend):
    boxes, scores = _batch(num_images=2, num_anchors=50, seed=6)
    scores[1] = 0.0  # second image: no candidate above the threshold
    result = ops.multiclass_nms(boxes, scores, score_thresh=0.5, max_detections=300, backend=backend)
    n0 = int(result.num_detections[0])
    assert 0 < n0 < 300 and int(result.num_detections[1]) == 0
    pad = result.detections[0, n0:]
    assert (pad[:, :5] == 0).all() and (pad[:, 5] == -1).all()
    assert (result.detections[1, :, 5] == -1).all()
    assert result.split()[1].shape == (0, 6)
    none = ops.multiclass_nms(torch.zeros(2, 0, 4), torch.zeros(2, 0, 3), backend=backend)
    assert none.detections.shape == (2, 100, 6) and none.num_detections.tolist() == [0, 0]


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_dtypes_and_ties_agree_across_backends(dtype):
    boxes, _ = _batch(num_images=2, num_anchors=300, num_classes=3, seed=7)
    scores = (torch.randint(1, 6, (2, 300, 3)).float() / 6).to(dtype)  # heavy ties
    a = ops.multiclass_nms(boxes.to(dtype), scores, score_thresh=0.1, pre_nms_topk=100, max_detections=150)
    b = ops.multiclass_nms(boxes.to(dtype), scores, score_thresh=0.1, pre_nms_topk=100, max_detections=150,
                           backend="torch")
    assert torch.equal(a.num_detections, b.num_detections)
    assert torch.equal(a.detections, b.detections)
    assert a.detections.dtype == (torch.float32 if dtype == torch.float16 else dtype)


def test_rejects_bad_arguments():
    boxes, scores = _batch(num_images=1, num_anchors=10)
    with pytest.raises(ValueError, match="soft_nms"):
        ops.multiclass_nms(boxes, scores, soft_nms="hard")
    with pytest.raises(ValueError, match="sigma"):
        ops.multiclass_nms(boxes, scores, soft_nms="gaussian", sigma=0)
    with pytest.raises(ValueError, match=r"\[B, N, C\]"):
        ops.multiclass_nms(boxes, scores[0])


@pytest.mark.cuda
def test_cuda_matches_cpu():
    boxes, scores = _batch(num_images=4, num_anchors=3000, num_classes=20, seed=8)
    for kwargs in ({}, {"class_agnostic": True}, {"soft_nms": "linear"}):
        cpu = ops.multiclass_nms(boxes, scores, score_thresh=0.3, **kwargs)
        gpu = ops.multiclass_nms(boxes.cuda(), scores.cuda(), score_thresh=0.3, **kwargs)
        assert torch.equal(cpu.num_detections, gpu.num_detections.cpu())
        torch.testing.assert_close(cpu.detections, gpu.detections.cpu())
