"""Pairwise IoU family on CPU: cvkit (fused numba kernel) vs torchvision.ops, side by side.

Target (issue 2): >= 30x torchvision at 2k x 2k and 10k x 10k; extra memory <= 1.1x the output.
Run: .venv/bin/python benchmarks/bench_iou.py [--quick] [--threads 1 2]
"""

from __future__ import annotations

import tracemalloc

import torch
import torchvision.ops as tvo
from _data import clustered_boxes
from _harness import Bench, parse_args

from cvkit import ops


def _extra_memory_ratio(fn, a, b) -> float:
    """Peak numpy/python allocations during fn divided by the output size (torch CPU allocs use
    the numpy buffer for cvkit's kernel, which tracemalloc sees)."""
    out_bytes = a.shape[0] * b.shape[0] * a.element_size()
    tracemalloc.start()
    fn(a, b)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / out_bytes


def main() -> None:
    args = parse_args("iou")
    bench = Bench("iou", args)
    sizes = [(2000, 2000)] if args.quick else [(2000, 2000), (10000, 10000)]
    family = [
        ("box_iou", ops.box_iou, tvo.box_iou),
        ("generalized_box_iou", ops.generalized_box_iou, tvo.generalized_box_iou),
        ("distance_box_iou", ops.distance_box_iou, tvo.distance_box_iou),
        ("complete_box_iou", ops.complete_box_iou, tvo.complete_box_iou),
    ]
    for threads in bench.thread_settings():
        for n, m in sizes:
            a, _ = clustered_boxes(n, seed=1)
            b, _ = clustered_boxes(m, seed=2)
            for name, ours, ref in family:
                if n >= 10000 and name != "box_iou" and args.repeat > 5:
                    bench.args.repeat, saved = 5, bench.args.repeat  # torchvision takes seconds here
                else:
                    saved = None
                bench.compare(
                    case={"op": name, "n": n, "m": m},
                    candidate=lambda ours=ours: ours(a, b),
                    baseline=lambda ref=ref: ref(a, b),
                    check=lambda x, y: bool(torch.allclose(x, y.nan_to_num(0.0), atol=1e-5, rtol=1e-5)),
                    target=30.0,
                )
                if saved is not None:
                    bench.args.repeat = saved
        if threads == 1:
            a, _ = clustered_boxes(2000, seed=1)
            ratio = _extra_memory_ratio(ops.box_iou, a, a)
            print(f"[iou] box_iou 2000x2000 peak extra memory / output = {ratio:.3f} (target <= 1.1)")
            bench.rows[-1]["extra_memory_ratio_box_iou_2k"] = round(ratio, 3)
    bench.finish()


if __name__ == "__main__":
    main()
