"""``cvkit ops-demo``: the ops on synthetic detector outputs, checked against torchvision and timed.

Until the detector lands this is the README's main command: it builds a batch of detector-like
outputs (boxes jittered around objects, softmax scores), runs ``nms``, ``batched_nms`` and the
whole-batch ``multiclass_nms``, checks each against torchvision, prints timings side by side, and
saves a picture of one image's raw candidates and kept detections.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cvkit import ops
from cvkit.cli._errors import cli_errors


def _objects(num_objects: int, size: int, g: torch.Generator) -> torch.Tensor:
    centres = torch.rand(num_objects, 2, generator=g) * size
    wh = torch.rand(num_objects, 2, generator=g) * size * 0.25 + size * 0.04
    return torch.cat([centres - wh / 2, centres + wh / 2], dim=1)


def make_detector_outputs(num_images: int, num_anchors: int, num_classes: int, size: int = 300, seed: int = 0):
    """Boxes ``[B, N, 4]`` jittered around a few objects and scores ``[B, N, C]`` that favour the
    object's class near it and background elsewhere."""
    g = torch.Generator().manual_seed(seed)
    all_boxes, all_scores = [], []
    for _ in range(num_images):
        objects = _objects(8, size, g)
        labels = torch.randint(0, num_classes, (8,), generator=g)
        k = torch.randint(0, 8, (num_anchors,), generator=g)
        wh = objects[k, 2:] - objects[k, :2]
        jitter = torch.randn(num_anchors, 4, generator=g) * 0.15
        boxes = objects[k] + jitter * wh.repeat(1, 2)
        iou = ops.box_iou(boxes, objects[k]).diagonal()
        logits = torch.randn(num_anchors, num_classes + 1, generator=g)
        logits[:, 0] += 2.0
        logits[torch.arange(num_anchors), labels[k] + 1] += 8.0 * iou
        all_boxes.append(boxes)
        all_scores.append(logits.softmax(-1)[:, 1:])
    return torch.stack(all_boxes), torch.stack(all_scores)


def _median_ms(fn, repeat: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _draw(boxes: torch.Tensor, dets: torch.Tensor, size: int, path: Path) -> None:
    import cv2

    scale = 2
    canvas = np.full((size * scale, size * scale, 3), 255, np.uint8)
    for box in (boxes * scale).round().int().tolist():
        cv2.rectangle(canvas, tuple(box[:2]), tuple(box[2:]), (210, 210, 210), 1)
    palette = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
    for row in dets.tolist():
        x1, y1, x2, y2, score, label = row
        color = palette[int(label) % len(palette)][::-1]
        p1, p2 = (round(x1 * scale), round(y1 * scale)), (round(x2 * scale), round(y2 * scale))
        cv2.rectangle(canvas, p1, p2, color, 2)
        cv2.putText(canvas, f"{int(label)}:{score:.2f}", (p1[0] + 2, p1[1] + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    color, 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), canvas)


@cli_errors("cvkit ops-demo")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cvkit ops-demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16, help="images in the batch (default 16)")
    parser.add_argument("--anchors", type=int, default=8732, help="candidate boxes per image (SSD300: 8732)")
    parser.add_argument("--classes", type=int, default=20, help="foreground classes (default 20)")
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="folder for the picture")
    args = parser.parse_args(argv)

    import torchvision.ops as tvo

    boxes, scores = make_detector_outputs(args.images, args.anchors, args.classes)
    print(f"cvkit demo: {args.images} images x {args.anchors} boxes x {args.classes} classes "
          f"(torch threads: {torch.get_num_threads()})\n")
    rows = []

    flat_boxes, flat_scores = boxes[0], scores[0].max(dim=1).values
    keep = ops.nms(flat_boxes, flat_scores, 0.5)
    same = torch.equal(keep, tvo.nms(flat_boxes, flat_scores, 0.5))
    rows.append(("nms (1 image)", len(keep), same, _median_ms(lambda: ops.nms(flat_boxes, flat_scores, 0.5)),
                 _median_ms(lambda: tvo.nms(flat_boxes, flat_scores, 0.5))))

    labels = scores[0].argmax(dim=1)
    keep = ops.batched_nms(flat_boxes, flat_scores, labels, 0.5)
    ref = tvo.batched_nms(flat_boxes, flat_scores, labels, 0.5)
    same = set(keep.tolist()) == set(ref.tolist())
    rows.append(("batched_nms (1 image)", len(keep), same,
                 _median_ms(lambda: ops.batched_nms(flat_boxes, flat_scores, labels, 0.5)),
                 _median_ms(lambda: tvo.batched_nms(flat_boxes, flat_scores, labels, 0.5))))

    kw: dict[str, Any] = dict(score_thresh=0.01, iou_thresh=0.45, pre_nms_topk=200, max_detections=200)
    result = ops.multiclass_nms(boxes, scores, **kw)

    def tv_loop():
        out = []
        for b in range(boxes.shape[0]):
            bx, sc, lb = [], [], []
            for c in range(scores.shape[2]):
                s = scores[b, :, c]
                m = s > kw["score_thresh"]
                s, idx = s[m].topk(min(200, int(m.sum())))
                bx.append(boxes[b][m][idx])
                sc.append(s)
                lb.append(torch.full_like(idx, c))
            bx, sc, lb = torch.cat(bx), torch.cat(sc), torch.cat(lb)
            k = tvo.batched_nms(bx, sc, lb, kw["iou_thresh"])[:200]
            out.append(torch.cat([bx[k], sc[k, None], lb[k, None].float()], 1))
        return out

    same = all(torch.allclose(a, b) for a, b in zip(result.split(), tv_loop()))
    rows.append((f"multiclass_nms ({args.images} images)", int(result.num_detections.sum()), same,
                 _median_ms(lambda: ops.multiclass_nms(boxes, scores, **kw), 5), _median_ms(tv_loop, 3)))

    print(f"{'op':<28} {'kept':>6} {'= torchvision':>14} {'cvkit ms':>10} {'torchvision ms':>15} {'speed-up':>9}")
    for name, kept, same, ours, theirs in rows:
        print(f"{name:<28} {kept:>6} {str(same):>14} {ours:>10.3f} {theirs:>15.3f} {theirs / ours:>8.1f}x")

    picture = args.out / "multiclass_nms.png"
    _draw(boxes[0], result.split()[0][:20], 300, picture)
    print(f"\npicture of image 0 (grey: {args.anchors} raw candidates, colour: top 20 detections): {picture}")
    ok = all(r[2] for r in rows)
    print("all outputs agree with torchvision" if ok else "MISMATCH with torchvision (see table)")
    return 0 if ok else 1
