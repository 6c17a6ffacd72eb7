"""The Triton NMS kernels (the CUDA path of nms / batched_nms), run on the CPU in Triton's interpreter.

``TRITON_INTERPRET=1`` has to be set before triton is imported, so the checks run in a fresh process.
They compare ``backend="triton"`` with the numba kernels (themselves checked against torchvision) on
the adversarial cases of test_nms.py. On a GPU machine test_cuda_parity.py runs the compiled kernels.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from cvkit import ops

triton = pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import torch
    from cvkit import ops
    from cvkit.ops._kernels import triton_nms
    from tests.ops._reference import clustered_boxes, py_nms

    assert triton_nms.interpreted()
    checked = 0

    def same(boxes, scores, idxs=None, thr=0.5):
        global checked
        if idxs is None:
            got = ops.nms(boxes, scores, thr, backend="triton")
            want = ops.nms(boxes, scores, thr, backend="numba")
        else:
            got = ops.batched_nms(boxes, scores, idxs, thr, backend="triton")
            want = ops.batched_nms(boxes, scores, idxs, thr, backend="numba")
        assert got.dtype == torch.int64, got.dtype
        assert torch.equal(got, want), (got.tolist(), want.tolist())
        checked += 1
        return got

    # clustered detector-like boxes with exact score ties, several sizes, dtypes and thresholds
    for n, classes, dtype, thr in [(1, 1, torch.float32, 0.5), (2, 1, torch.float32, 0.5),
                                   (200, 1, torch.float32, 0.3), (300, 5, torch.float32, 0.5),
                                   (250, 80, torch.float64, 0.7), (200, 3, torch.float16, 0.5)]:
        boxes, scores = clustered_boxes(n, num_objects=max(1, n // 25), seed=n)
        scores = (scores * 20).round() / 20
        boxes, scores = boxes.to(dtype), scores.to(dtype)
        same(boxes, scores, thr=thr)
        same(boxes, scores, torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(n)), thr=thr)

    # the slow pure-Python reference as a third opinion
    boxes, scores = clustered_boxes(120, num_objects=6, seed=3)
    assert same(boxes, scores).tolist() == py_nms(boxes, scores, 0.5)

    # IoU just below, at and just above the threshold; duplicates, zero-area, inverted and huge boxes
    base = torch.tensor([0.0, 0.0, 100.0, 100.0], dtype=torch.float64)
    rows, sc = [], []
    for k, shift in enumerate([100 / 3 - 1e-5, 100 / 3, 100 / 3 + 1e-5, 50.0]):
        rows += [base + 1000 * k, base + torch.tensor([shift, 0, shift, 0], dtype=torch.float64) + 1000 * k]
        sc += [0.9, 0.5]
    rows += [torch.tensor(r, dtype=torch.float64) for r in ([5, 5, 5, 15], [5, 5, 5, 15], [3, 3, 1, 1],
             [0, 0, 10, 10], [0, 0, 10, 10], [1e6, 1e6, 1e6 + 50, 1e6 + 40], [1e6 + 10, 1e6, 1e6 + 60, 1e6 + 40])]
    sc += [0.7, 0.7, 0.7, 0.6, 0.6, 0.4, 0.3]
    boxes, scores = torch.stack(rows), torch.tensor(sc, dtype=torch.float64)
    for dtype in (torch.float32, torch.float64):
        same(boxes.to(dtype), scores.to(dtype))
        same(boxes.to(dtype), scores.to(dtype), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 6, 6, 7, 7]))

    # degenerate lattice (issue 16): points, zero-width/-height boxes and duplicates, near 0 and at +-1e7
    g = torch.Generator().manual_seed(16)
    xy = torch.randint(0, 13, (160, 2), generator=g).double()
    wh = torch.tensor([0.0, 0.0, 1.0, 2.0, 4.0], dtype=torch.float64)[torch.randint(0, 5, (160, 2), generator=g)]
    offset = torch.tensor([0.0, 1e7, -1e7], dtype=torch.float64)[torch.randint(0, 3, (160, 1), generator=g)]
    boxes = torch.cat([xy, xy + wh], dim=1) + offset
    scores = torch.randperm(160, generator=g).double() / 160
    for dtype in (torch.float32, torch.float64):
        keep = same(boxes.to(dtype), scores.to(dtype), thr=0.3)
        same(boxes.to(dtype), scores.to(dtype), torch.randint(0, 3, (160,), generator=g), thr=0.3)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        assert set(torch.where(area == 0)[0].tolist()) <= set(keep.tolist())

    # class ids need not be contiguous or positive; a class of one box; more than 64 boxes in a class
    boxes, scores = clustered_boxes(200, num_objects=3, seed=11)
    idxs = torch.where(torch.arange(200) < 150, -7, 10**9)
    idxs[5] = 42
    same(boxes, scores, idxs)

    # a class larger than MAX_SEGMENT takes the torch fallback, with the same answer
    triton_nms.MAX_SEGMENT = 50
    same(boxes, scores)
    same(boxes, scores, idxs)
    print("checked", checked)
    """
)


def test_triton_kernels_match_numba_in_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "checked 24" in proc.stdout, proc.stdout


def test_triton_backend_needs_cuda_or_the_interpreter():
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        with pytest.raises(ValueError, match="triton"):
            ops.nms(boxes, torch.ones(1), 0.5, backend="triton")
    with pytest.raises(ValueError, match="no Triton kernel"):
        ops.multiclass_nms(boxes[None], torch.ones(1, 1, 1), backend="triton")
