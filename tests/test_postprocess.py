"""DetectionPostprocessor: output format, clipping and rescaling, equality with a per-image torchvision reference."""

import pytest
import torch
from torchvision.models.detection import _utils as det_utils
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image

from cvkit.postprocess import DetectionPostprocessor, PostprocessConfig


def _anchors(size: int = 96) -> torch.Tensor:
    step = 8
    centres = (torch.arange(size // step, dtype=torch.float32) + 0.5) * step
    cy, cx = torch.meshgrid(centres, centres, indexing="ij")
    out = []
    for w, h in ((12.0, 12.0), (20.0, 14.0), (30.0, 30.0)):
        out.append(torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1).reshape(-1, 4))
    return torch.cat(out)  # 432 anchors, some reaching outside the image


def _outputs(batch=3, num_classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    anchors = _anchors()
    logits = torch.randn(batch, anchors.shape[0], num_classes + 1, generator=g) * 2
    logits[..., 0] += 1.5  # background usually wins, as in a trained detector
    deltas = torch.randn(batch, anchors.shape[0], 4, generator=g) * 0.5
    return {"cls_logits": logits, "bbox_deltas": deltas, "anchors": anchors}


def reference(outputs, image_sizes, orig_sizes, cfg):
    """torchvision SSD's per-image, per-class loop with torchvision.ops.batched_nms."""
    coder = det_utils.BoxCoder((10.0, 10.0, 5.0, 5.0))
    results = []
    for b in range(outputs["cls_logits"].shape[0]):
        scores_all = torch.softmax(outputs["cls_logits"][b], -1)
        h, w = (int(v) for v in image_sizes[b])
        boxes = clip_boxes_to_image(coder.decode_single(outputs["bbox_deltas"][b], outputs["anchors"]), (h, w))
        all_boxes, all_scores, all_labels = [], [], []
        for label in range(1, scores_all.shape[1]):
            score = scores_all[:, label]
            keep = score > cfg.score_thresh
            s, bx = score[keep], boxes[keep]
            s, idx = s.topk(min(cfg.pre_nms_topk, s.numel()))
            all_boxes.append(bx[idx])
            all_scores.append(s)
            all_labels.append(torch.full_like(idx, label - 1))
        boxes, scores, labels = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels)
        keep = batched_nms(boxes, scores, labels, cfg.iou_thresh)[: cfg.max_detections]
        oh, ow = (int(v) for v in orig_sizes[b])
        scale = torch.tensor([ow / w, oh / h, ow / w, oh / h])
        results.append({"boxes": boxes[keep] * scale, "scores": scores[keep], "labels": labels[keep]})
    return results


@pytest.mark.parametrize(
    "cfg", [PostprocessConfig(), PostprocessConfig(score_thresh=0.2, pre_nms_topk=50, max_detections=30)]
)
def test_equals_per_image_torchvision_reference(cfg):
    outputs = _outputs()
    image_sizes = torch.tensor([[96, 96], [96, 96], [96, 96]])
    orig_sizes = torch.tensor([[96, 96], [480, 640], [200, 150]])
    ours = DetectionPostprocessor(cfg)(outputs, image_sizes, orig_sizes)
    ref = reference(outputs, image_sizes, orig_sizes, cfg)
    assert len(ours) == 3
    for a, b in zip(ours, ref):
        assert a["boxes"].shape[0] > 10
        torch.testing.assert_close(a["scores"], b["scores"])
        assert torch.equal(a["labels"], b["labels"])
        torch.testing.assert_close(a["boxes"], b["boxes"], rtol=1e-5, atol=1e-4)


def test_output_format():
    cfg = PostprocessConfig(max_detections=25)
    dets = DetectionPostprocessor(cfg)(_outputs(batch=2), torch.tensor([[96, 96]] * 2), torch.tensor([[96, 96]] * 2))
    for d in dets:
        assert set(d) == {"boxes", "scores", "labels"}
        n = d["boxes"].shape[0]
        assert 0 < n <= 25 and d["boxes"].shape == (n, 4) and d["scores"].shape == (n,) and d["labels"].shape == (n,)
        assert d["boxes"].dtype == torch.float32 and d["scores"].dtype == torch.float32
        assert d["labels"].dtype == torch.int64
        assert ((d["labels"] >= 0) & (d["labels"] < 4)).all()  # foreground labels, background dropped
        assert (d["scores"][:-1] >= d["scores"][1:]).all() and (d["scores"] > cfg.score_thresh).all()
        assert (d["boxes"][:, 2:] >= d["boxes"][:, :2]).all()


def test_rescaling_and_clipping_to_original_pixels():
    outputs = _outputs(batch=2, seed=3)
    sizes = torch.tensor([[96, 96], [96, 96]])
    same = DetectionPostprocessor()(outputs, sizes, sizes)
    orig = torch.tensor([[192, 288], [48, 96]])  # (h, w): 2x taller and 3x wider; half as tall
    scaled = DetectionPostprocessor()(outputs, sizes, orig)
    factors = [torch.tensor([3.0, 2.0, 3.0, 2.0]), torch.tensor([1.0, 0.5, 1.0, 0.5])]
    for a, b, f, (h, w) in zip(same, scaled, factors, orig.tolist()):
        torch.testing.assert_close(b["boxes"], a["boxes"] * f)
        assert torch.equal(a["scores"], b["scores"]) and torch.equal(a["labels"], b["labels"])
        assert (b["boxes"] >= 0).all() and (b["boxes"][:, 0::2] <= w).all() and (b["boxes"][:, 1::2] <= h).all()
    # anchors at the border decode outside the image: clipping must have been applied to some boxes
    assert any((d["boxes"] == 0).any() or (d["boxes"] == 96).any() for d in same)


def test_smaller_image_inside_a_padded_batch_is_clipped_to_its_own_size():
    outputs = _outputs(batch=2, seed=4)
    dets = DetectionPostprocessor()(outputs, torch.tensor([[96, 96], [50, 60]]), None)
    assert (dets[1]["boxes"][:, 0::2] <= 60).all() and (dets[1]["boxes"][:, 1::2] <= 50).all()
    assert (dets[0]["boxes"][:, 0::2] > 60).any()


def test_confident_background_gives_no_detections_and_agnostic_nms():
    outputs = _outputs(batch=2)
    outputs["cls_logits"][..., 0] += 50.0
    dets = DetectionPostprocessor()(outputs, torch.tensor([[96, 96]] * 2), torch.tensor([[96, 96]] * 2))
    assert all(d["boxes"].shape == (0, 4) and d["labels"].shape == (0,) for d in dets)
    outputs = _outputs(batch=1)
    per_class = DetectionPostprocessor(PostprocessConfig())(outputs, [[96, 96]], [[96, 96]])[0]
    agnostic = DetectionPostprocessor(PostprocessConfig(class_agnostic=True))(outputs, [[96, 96]], [[96, 96]])[0]
    assert agnostic["boxes"].shape[0] < per_class["boxes"].shape[0]
    iou = box_iou(agnostic["boxes"], agnostic["boxes"]).fill_diagonal_(0)
    assert (iou <= 0.45 + 1e-6).all()


def test_wrong_size_shapes():
    with pytest.raises(ValueError, match=r"image_sizes must have shape \(B, 2\)"):
        DetectionPostprocessor()(_outputs(batch=2), torch.tensor([[96, 96]]), None)
