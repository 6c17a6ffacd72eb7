"""nms / batched_nms on CPU: cvkit (numba, grid over kept boxes) vs torchvision.ops, side by side.

Targets (issue 2): >= 10x torchvision at >= 5k boxes (1, 20, 80 classes), >= 5x at 1k; 100k boxes in
<= 5 ms on one thread. With --device cuda: cvkit's batched torch path vs torchvision's CUDA kernels
(target >= 2x at 10k-100k boxes x 80 classes).
Run: .venv/bin/python benchmarks/bench_nms.py [--quick] [--threads 1 2] [--device cuda]
"""

from __future__ import annotations

import torch
import torchvision.ops as tvo
from _data import clustered_boxes
from _harness import Bench, parse_args

from cvkit import ops


def _same_set(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.cpu(), b.cpu())


def main() -> None:
    args = parse_args("nms")
    bench = Bench("nms", args)
    device = torch.device(args.device)
    counts = [1000, 5000, 20000] if args.quick else [1000, 5000, 20000, 100000]
    if device.type == "cuda":
        counts = [10000, 100000]
    for _ in bench.thread_settings():
        for n in counts:
            boxes, scores = clustered_boxes(n, num_objects=max(10, n // 500), seed=n)
            boxes, scores = boxes.to(device), scores.to(device)
            for classes in (1, 20, 80):
                if device.type == "cuda" and classes == 20:
                    continue
                # CUDA: the 2x target is for batched NMS (80 classes); single-class rows are for information
                target = (10.0 if n >= 5000 else 5.0) if device.type == "cpu" else (2.0 if classes == 80 else None)
                if classes == 1:
                    bench.compare(
                        case={"op": "nms", "boxes": n, "classes": 1},
                        candidate=lambda: ops.nms(boxes, scores, 0.5),
                        baseline=lambda: tvo.nms(boxes, scores, 0.5),
                        check=_same_set,
                        target=target,
                    )
                    if n == 100000 and bench.threads == 1 and device.type == "cpu":
                        ms = bench.rows[-1]["cvkit_ms"]
                        print(f"[nms] 100k boxes on one thread: {ms:.2f} ms (target <= 5 ms)")
                else:
                    g = torch.Generator().manual_seed(classes)
                    idxs = torch.randint(0, classes, (n,), generator=g).to(device)
                    bench.compare(
                        case={"op": "batched_nms", "boxes": n, "classes": classes},
                        candidate=lambda idxs=idxs: ops.batched_nms(boxes, scores, idxs, 0.5),
                        baseline=lambda idxs=idxs: tvo.batched_nms(boxes, scores, idxs, 0.5),
                        check=_same_set,
                        target=target,
                    )
    bench.finish()


if __name__ == "__main__":
    main()
