"""CPU and CUDA give the same answer, op by op (run on a GPU machine with ``pytest -m cuda``).

Every public op of ``cvkit.ops`` is called on the same inputs on both devices: exact equality where the
result is a decision (NMS keeps, matches, anchors), a tight tolerance where it is float arithmetic done in
a different order by different kernels. CI has no GPU; there the torch path these tests exercise on CUDA is
checked on the CPU through ``backend="torch"`` (tests/ops/test_nms.py, test_multiclass_nms.py).
"""

from __future__ import annotations

import pytest
import torch
import torchvision

from cvkit import ops
from cvkit.losses import LossConfig, MultiBoxLoss
from cvkit.models import ModelConfig, build_ssd
from cvkit.ops import AnchorConfig
from cvkit.postprocess import DetectionPostprocessor
from tests.ops._reference import clustered_boxes
from tests.ops.test_d2l import DOG_CAT_GT, FIVE_ANCHORS

pytestmark = pytest.mark.cuda


def _pair(n: int, m: int, seed: int, dtype=torch.float32):
    a, _ = clustered_boxes(n, num_objects=max(1, n // 20), seed=seed)
    b, _ = clustered_boxes(m, num_objects=max(1, m // 20), seed=seed + 1)
    return a.to(dtype), b.to(dtype)


def _edge_boxes(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    big = 3e4 if dtype == torch.float16 else 1e6  # huge, but representable (float16 stops at 65504)
    return torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 0.0, 10.0, 10.0],  # duplicate
            [5.0, 5.0, 5.0, 15.0],  # zero width
            [3.0, 3.0, 1.0, 1.0],  # inverted
            [big, big, big + 50.0, big + 40.0],  # huge coordinates
            [big + 10.0, big, big + 60.0, big + 40.0],
            [2.0, 2.0, 12.0, 12.0],
        ],
        dtype=dtype,
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize(
    "fn", [ops.box_iou, ops.generalized_box_iou, ops.distance_box_iou, ops.complete_box_iou], ids=lambda f: f.__name__
)
def test_iou_family(fn, dtype):
    a, b = _pair(300, 200, seed=1, dtype=dtype)
    a = torch.cat([a, _edge_boxes(dtype)])
    a_cuda, b_cuda = a.cuda(), b.cuda()
    before = a_cuda.clone()
    cpu, gpu = fn(a, b), fn(a_cuda, b_cuda)
    assert gpu.device.type == "cuda" and gpu.dtype == cpu.dtype and gpu.shape == (a.shape[0], b.shape[0])
    assert torch.equal(a_cuda, before)  # inputs not mutated
    assert not gpu.isnan().any()
    tol = {torch.float16: 2e-3, torch.float32: 1e-5, torch.float64: 1e-12}[dtype]
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=tol, atol=tol)
    empty = fn(a_cuda[:0], b_cuda)
    assert empty.shape == (0, b.shape[0]) and empty.device.type == "cuda"


@pytest.mark.parametrize(
    "fn", [ops.box_iou, ops.generalized_box_iou, ops.distance_box_iou, ops.complete_box_iou], ids=lambda f: f.__name__
)
def test_iou_gradients_on_cuda(fn):
    g = torch.Generator().manual_seed(11)
    xy = torch.rand(5, 2, generator=g, dtype=torch.float64) * 10
    a = torch.cat([xy, xy + 2 + torch.rand(5, 2, generator=g, dtype=torch.float64) * 5], 1)
    xy = torch.rand(4, 2, generator=g, dtype=torch.float64) * 10
    b = torch.cat([xy, xy + 2 + torch.rand(4, 2, generator=g, dtype=torch.float64) * 5], 1)
    a_cuda = a.cuda().requires_grad_()
    if fn is not ops.complete_box_iou:  # CIoU's aspect term has no gradient through its alpha (as torchvision)
        assert torch.autograd.gradcheck(lambda x: fn(x, b.cuda()), (a_cuda,), eps=1e-6, atol=1e-5)
    a_cpu = a.detach().clone().requires_grad_()
    fn(a_cpu, b).sum().backward()
    fn(a_cuda, b.cuda()).sum().backward()
    torch.testing.assert_close(a_cuda.grad.cpu(), a_cpu.grad)


def test_box_utilities():
    boxes, _ = clustered_boxes(500, seed=3)
    boxes = torch.cat([boxes, _edge_boxes()])
    g = boxes.cuda()
    for fmt in ("xywh", "cxcywh"):
        conv = ops.box_convert(g, "xyxy", fmt)
        torch.testing.assert_close(conv.cpu(), ops.box_convert(boxes, "xyxy", fmt))
        torch.testing.assert_close(
            ops.box_convert(conv, fmt, "xyxy").cpu(), ops.box_convert(ops.box_convert(boxes, "xyxy", fmt), fmt, "xyxy")
        )
    torch.testing.assert_close(ops.box_area(g).cpu(), ops.box_area(boxes))
    torch.testing.assert_close(ops.clip_boxes_to_image(g, (480, 640)).cpu(), ops.clip_boxes_to_image(boxes, (480, 640)))
    assert torch.equal(ops.remove_small_boxes(g, 5.0).cpu(), ops.remove_small_boxes(boxes, 5.0))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("n", [1, 2, 500, 5000, 100_000])
def test_nms_edge_cases(n, dtype):
    boxes, scores = clustered_boxes(n, num_objects=max(1, n // 30), seed=n)
    scores = (scores * 50).round() / 50  # many exact ties
    boxes, scores = boxes.to(dtype), scores.to(dtype)
    cpu = ops.nms(boxes, scores, 0.5)
    gpu = ops.nms(boxes.cuda(), scores.cuda(), 0.5)
    assert gpu.dtype == torch.int64 and gpu.device.type == "cuda"
    assert torch.equal(gpu.cpu(), cpu)
    idxs = torch.randint(0, 80, (n,))
    assert torch.equal(
        ops.batched_nms(boxes.cuda(), scores.cuda(), idxs.cuda(), 0.5).cpu(), ops.batched_nms(boxes, scores, idxs, 0.5)
    )


def test_nms_matches_torchvision_without_ties():
    boxes, _ = clustered_boxes(20_000, num_objects=400, seed=5)
    scores = torch.randperm(20_000).float()  # distinct scores: torchvision's order is defined
    idxs = torch.randint(0, 80, (20_000,))
    g_boxes, g_scores, g_idxs = boxes.cuda(), scores.cuda(), idxs.cuda()
    for thr in (0.3, 0.5, 0.7):
        for backend in ("auto", "torch"):
            # torchvision's CPU kernel is the oracle: same arithmetic, so the same keeps to the last box
            assert torch.equal(
                ops.nms(g_boxes, g_scores, thr, backend=backend).cpu(), torchvision.ops.nms(boxes, scores, thr)
            )
            ours = ops.batched_nms(g_boxes, g_scores, g_idxs, thr, backend=backend).cpu()
            assert torch.equal(ours, torchvision.ops.batched_nms(boxes, scores, idxs, thr))
        # torchvision's CUDA kernel rounds differently (fused multiply-adds), so pairs within an ulp of the
        # threshold may go the other way there: allow a handful of such boxes out of thousands
        theirs = torchvision.ops.batched_nms(g_boxes, g_scores, g_idxs, thr).cpu()
        assert len(set(ours.tolist()) ^ set(theirs.tolist())) <= max(2, len(theirs) // 1000)


def test_triton_fallback_for_a_class_larger_than_max_segment(monkeypatch):
    from cvkit.ops._kernels import triton_nms

    boxes, scores = clustered_boxes(3000, num_objects=50, seed=12)
    idxs = torch.randint(0, 3, (3000,))
    want = ops.batched_nms(boxes, scores, idxs, 0.5)
    monkeypatch.setattr(triton_nms, "MAX_SEGMENT", 500)
    assert torch.equal(ops.batched_nms(boxes.cuda(), scores.cuda(), idxs.cuda(), 0.5).cpu(), want)


def test_nms_at_the_threshold_and_degenerate_boxes():
    # pairs built to have IoU just above, at and below 0.5: CPU and CUDA decide alike
    base = torch.tensor([0.0, 0.0, 100.0, 100.0], dtype=torch.float64)
    rows, scores = [base], [1.0]
    for k, shift in enumerate([100 / 3 - 1e-5, 100 / 3, 100 / 3 + 1e-5]):
        rows.append(base + torch.tensor([shift, 0, shift, 0], dtype=torch.float64) + 1000 * (k + 1))
        rows.append(base + 1000 * (k + 1))
        scores += [0.5, 0.9]
    boxes = torch.stack(rows)
    scores_t = torch.tensor(scores, dtype=torch.float64)
    boxes = torch.cat([boxes, _edge_boxes().double()])
    scores_t = torch.cat([scores_t, torch.full((7,), 0.7, dtype=torch.float64)])
    for dtype in (torch.float32, torch.float64):
        b, s = boxes.to(dtype), scores_t.to(dtype)
        assert torch.equal(ops.nms(b.cuda(), s.cuda(), 0.5).cpu(), ops.nms(b, s, 0.5))
    empty = ops.nms(torch.zeros(0, 4, device="cuda"), torch.zeros(0, device="cuda"), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.int64 and empty.device.type == "cuda"


def _detector_batch(num_images=4, num_anchors=8732, num_classes=20, seed=0, per_class_boxes=False):
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(num_images, num_anchors, 2, generator=g) * 300
    sizes = torch.rand(num_images, num_anchors, 2, generator=g) * 80 + 4
    boxes = torch.cat([centres - sizes / 2, centres + sizes / 2], dim=-1)
    if per_class_boxes:
        jitter = torch.randn(num_images, num_anchors, num_classes, 4, generator=g) * 2
        boxes = boxes[:, :, None, :] + jitter
    logits = torch.randn(num_images, num_anchors, num_classes + 1, generator=g) * 3
    logits[..., 0] += 4
    scores = torch.softmax(logits, -1)[..., 1:]
    return boxes, scores


@pytest.mark.parametrize("per_class_boxes", [False, True])
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"class_agnostic": True},
        {"pre_nms_topk": 0},
        {"max_detections": 7},
        {"soft_nms": "linear"},
        {"soft_nms": "gaussian", "sigma": 0.3},
    ],
    ids=["hard", "agnostic", "all", "max7", "linear", "gaussian"],
)
def test_multiclass_nms(kwargs, per_class_boxes):
    boxes, scores = _detector_batch(per_class_boxes=per_class_boxes, num_anchors=3000 if per_class_boxes else 8732)
    args = {"score_thresh": 0.05, "iou_thresh": 0.45, "pre_nms_topk": 200, "max_detections": 100, **kwargs}
    cpu = ops.multiclass_nms(boxes, scores, **args)
    gpu = ops.multiclass_nms(boxes.cuda(), scores.cuda(), **args)
    assert gpu.detections.device.type == "cuda"
    assert torch.equal(cpu.num_detections, gpu.num_detections.cpu())
    if "soft_nms" in kwargs:  # decayed scores are products computed in another order
        torch.testing.assert_close(gpu.detections.cpu(), cpu.detections, rtol=1e-5, atol=1e-5)
    else:
        assert torch.equal(gpu.detections.cpu(), cpu.detections)


def test_anchors_and_d2l_functions():
    gen = ops.AnchorGenerator.ssd300()
    sizes = [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]
    cpu = gen(sizes, (300, 300))
    gpu = gen(sizes, (300, 300), device="cuda")
    assert gpu.device.type == "cuda" and gpu.shape == cpu.shape == (8732, 4)
    torch.testing.assert_close(gpu.cpu(), cpu)
    x = torch.zeros(1, 3, 561, 728)
    torch.testing.assert_close(
        ops.multibox_prior(x.cuda(), [0.75, 0.5, 0.25], [1, 2, 0.5]).cpu(),
        ops.multibox_prior(x, [0.75, 0.5, 0.25], [1, 2, 0.5]),
    )
    # the book's dog/cat example: targets and detections agree across devices
    ground_truth, anchors = DOG_CAT_GT, FIVE_ANCHORS
    cpu_t = ops.multibox_target(anchors[None], ground_truth[None])
    gpu_t = ops.multibox_target(anchors[None].cuda(), ground_truth[None].cuda())
    for c, g in zip(cpu_t, gpu_t, strict=True):
        torch.testing.assert_close(g.cpu(), c)
    cls_probs = torch.tensor([[0.0] * 4, [0.9, 0.8, 0.7, 0.1], [0.1, 0.2, 0.3, 0.9]])
    boxes4 = torch.tensor(
        [[0.1, 0.08, 0.52, 0.92], [0.08, 0.2, 0.56, 0.95], [0.15, 0.3, 0.62, 0.91], [0.55, 0.2, 0.9, 0.88]]
    )
    offsets = torch.zeros(16)
    cpu_d = ops.multibox_detection(cls_probs[None], offsets[None], boxes4[None], nms_threshold=0.5)
    gpu_d = ops.multibox_detection(cls_probs[None].cuda(), offsets[None].cuda(), boxes4[None].cuda(), nms_threshold=0.5)
    torch.testing.assert_close(gpu_d.cpu(), cpu_d)


def test_box_coder_round_trip_on_cuda():
    anchors = ops.AnchorGenerator.ssd300()([(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)], (300, 300))
    gt, _ = clustered_boxes(anchors.shape[0], num_objects=100, size=300.0, seed=6)
    gt[:, 2:] += 1.0
    enc_cpu = ops.encode_boxes(gt, anchors)
    enc_gpu = ops.encode_boxes(gt.cuda(), anchors.cuda())
    torch.testing.assert_close(enc_gpu.cpu(), enc_cpu, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ops.decode_boxes(enc_gpu, anchors.cuda()).cpu(), gt, rtol=1e-4, atol=1e-3)


@pytest.fixture
def full_float32():
    """TF32 off on the GPU (TF32 convolutions differ from the CPU's by ~1e-2)."""
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32


def test_detector_forward_loss_and_postprocess_on_cuda(full_float32):
    torch.manual_seed(0)
    model = build_ssd(ModelConfig(backbone="resnet18"), AnchorConfig(), num_classes=5).eval()
    images = torch.randn(2, 3, 300, 300)
    targets = [
        {"boxes": torch.tensor([[10.0, 20.0, 120.0, 200.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[50.0, 50.0, 250.0, 250.0], [0.0, 0.0, 30.0, 30.0]]), "labels": torch.tensor([0, 4])},
    ]
    criterion = MultiBoxLoss(LossConfig())
    with torch.no_grad():
        out_cpu = model(images)
        loss_cpu = criterion(out_cpu, targets)
        model.cuda()
        out_gpu = model(images.cuda())
        loss_gpu = criterion(out_gpu, [{k: v.cuda() for k, v in t.items()} for t in targets])
    for key in ("cls_logits", "bbox_deltas", "anchors"):
        torch.testing.assert_close(out_gpu[key].cpu(), out_cpu[key], rtol=1e-3, atol=1e-3)
    for key in loss_cpu:
        torch.testing.assert_close(loss_gpu[key].cpu(), loss_cpu[key], rtol=1e-3, atol=1e-3)
    # same raw outputs -> the same detections on both devices. An untrained model scores every anchor about
    # alike, so near-equal scores may swap places after the GPU's softmax: compare sorted scores, and each
    # GPU box with the CPU boxes of its label
    post = DetectionPostprocessor()
    sizes = [[300, 300], [300, 300]]
    det_cpu = post(out_cpu, sizes, [[600, 400], [300, 300]])
    det_gpu = post({k: v.cuda() for k, v in out_cpu.items()}, sizes, [[600, 400], [300, 300]])
    for c, g in zip(det_cpu, det_gpu, strict=True):
        assert g["boxes"].shape == c["boxes"].shape and g["boxes"].shape[0] > 0
        torch.testing.assert_close(g["scores"].cpu(), c["scores"], rtol=1e-5, atol=1e-6)
        same_label = g["labels"].cpu()[:, None] == c["labels"][None, :]
        gap = (g["boxes"].cpu()[:, None, :] - c["boxes"][None, :, :]).abs().amax(dim=-1)  # (n, n)
        assert ((gap < 1e-3) & same_label).any(dim=1).all()  # (clipped boxes can be degenerate: no IoU here)
