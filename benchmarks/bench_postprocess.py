"""SSD-style batch postprocess: cvkit.ops.multiclass_nms (one call) vs the usual torchvision loop.

Case (issue 2): 16 images x 8732 anchors x 21 classes (20 foreground), score > 0.01, top-200 per class,
IoU 0.45, 200 detections per image. Baseline: torchvision SSD's postprocess pattern: per image, per
class threshold + top-k, then `batched_nms`. Target: >= 10x on one thread (CPU); >= 5x on a GPU.
Run: .venv/bin/python benchmarks/bench_postprocess.py [--quick] [--threads 1 2] [--device cuda]
"""

from __future__ import annotations

import torch
import torchvision.ops as tvo
from _data import clustered_boxes
from _harness import Bench, parse_args

from cvkit import ops


def make_outputs(num_images, num_anchors, num_classes, seed=0):
    """Detector-like outputs: anchors mostly background, a few objects with confident classes."""
    g = torch.Generator().manual_seed(seed)
    boxes = torch.stack([clustered_boxes(num_anchors, num_objects=30, width=300, height=300, seed=seed + i)[0]
                         for i in range(num_images)])
    logits = torch.randn(num_images, num_anchors, num_classes + 1, generator=g)
    logits[..., 0] += 4.0  # background dominates
    hot = torch.rand(num_images, num_anchors, generator=g) < 0.05
    cls = torch.randint(1, num_classes + 1, (num_images, num_anchors), generator=g)
    logits.scatter_add_(2, cls[..., None], (hot.float() * 7.0)[..., None])
    scores = logits.softmax(-1)[..., 1:]  # drop background
    return boxes, scores.contiguous()


def torchvision_loop(boxes, scores, score_thresh, topk, iou, max_det):
    results = []
    for b in range(scores.shape[0]):
        image_boxes, image_scores, image_labels = [], [], []
        for c in range(scores.shape[2]):
            s = scores[b, :, c]
            keep = s > score_thresh
            s = s[keep]
            bx = boxes[b][keep]
            num = min(topk, s.numel())
            s, idx = s.topk(num)
            image_boxes.append(bx[idx])
            image_scores.append(s)
            image_labels.append(torch.full_like(idx, c))
        bx = torch.cat(image_boxes)
        sc = torch.cat(image_scores)
        lb = torch.cat(image_labels)
        keep = tvo.batched_nms(bx, sc, lb, iou)[:max_det]
        results.append(torch.cat([bx[keep], sc[keep, None], lb[keep, None].to(bx.dtype)], 1))
    return results


def _canonical(dets: torch.Tensor) -> list[list[float]]:
    # torchvision orders equal scores arbitrarily (cvkit: by class, then rank): compare modulo that
    return sorted(dets.cpu().tolist(), key=lambda r: (-r[4], r[5], r[0], r[1], r[2], r[3]))


def _agree(ours, ref) -> bool:
    got = ours.split()
    return len(got) == len(ref) and all(_canonical(a) == _canonical(b) for a, b in zip(got, ref))


def main() -> None:
    args = parse_args("postprocess")
    bench = Bench("postprocess", args)
    device = torch.device(args.device)
    num_images = 4 if args.quick else 16
    boxes, scores = make_outputs(num_images, 8732, 20)
    boxes, scores = boxes.to(device), scores.to(device)
    kw = dict(score_thresh=0.01, iou_thresh=0.45, pre_nms_topk=200, max_detections=200)
    target = 10.0 if device.type == "cpu" else 5.0
    for _ in bench.thread_settings():
        bench.compare(
            case={"op": "multiclass_nms", "images": num_images, "anchors": 8732, "classes": 21},
            candidate=lambda: ops.multiclass_nms(boxes, scores, **kw),
            baseline=lambda: torchvision_loop(boxes, scores, 0.01, 200, 0.45, 200),
            check=_agree,
            target=target,
            baseline_name="torchvision_loop",
        )
        bench.compare(
            case={"op": "multiclass_nms_soft_gaussian", "images": num_images, "anchors": 8732, "classes": 21},
            candidate=lambda: ops.multiclass_nms(boxes, scores, soft_nms="gaussian", **kw),
            baseline=lambda: torchvision_loop(boxes, scores, 0.01, 200, 0.45, 200),
            check=None,
            baseline_name="torchvision_loop(hard)",
        )
    bench.finish()


if __name__ == "__main__":
    main()
