"""The numba kernels use torch's thread setting and leave it as they found it.

numba's OpenMP threading layer sets the process-wide OpenMP thread count when its own count changes, and
torch reads that same count: a kernel that set numba's threads and restored numba's previous count moved a
run set to one thread onto two (different float summation order, so a resumed run no longer reproduced the
uninterrupted one).
"""

from __future__ import annotations

import pytest
import torch

from cvkit import ops
from cvkit.ops._kernels.cpu_assign import MODE_SSD, greedy_assign_cpu, match_cpu


def _anchors():
    return ops.AnchorGenerator(sizes=[[32], [64]], aspect_ratios=[1.0])([(40, 40), (20, 20)], (320, 320))


def _gt(batch):
    return torch.tensor([[[10.0, 10.0, 60.0, 60.0], [100.0, 120.0, 220.0, 200.0]]]).repeat(batch, 1, 1)


@pytest.mark.parametrize("batch", [1, 4])
def test_matching_keeps_torchs_thread_count(one_thread, batch):
    match_cpu(_anchors(), _gt(batch), torch.ones(batch, 2, dtype=torch.bool), 0.5, 0.5, MODE_SSD)
    assert torch.get_num_threads() == 1
    greedy_assign_cpu(_anchors(), _gt(batch), 0.5)
    assert torch.get_num_threads() == 1


def test_pairwise_iou_and_nms_keep_torchs_thread_count(one_thread):
    boxes = torch.rand(3000, 4) * 100
    boxes[:, 2:] += boxes[:, :2]
    ops.box_iou(boxes, boxes)  # large enough for the prange kernel
    assert torch.get_num_threads() == 1
    ops.batched_nms(boxes, torch.rand(3000), torch.randint(0, 5, (3000,)), 0.5)
    assert torch.get_num_threads() == 1


def test_kernels_still_use_two_threads_when_torch_does():
    if torch.get_num_threads() < 2:
        pytest.skip("torch runs on one thread here")
    before = torch.get_num_threads()
    match_cpu(_anchors(), _gt(4), torch.ones(4, 2, dtype=torch.bool), 0.5, 0.5, MODE_SSD)
    assert torch.get_num_threads() == before


def test_a_fresh_process_set_to_one_thread_stays_on_one_thread():
    """The first kernel of a process starts numba's pool (the moment the count used to change)."""
    import subprocess
    import sys

    code = (
        "import torch\n"
        "torch.set_num_threads(1)\n"
        "from tests.ops.test_kernel_threads import _anchors, _gt\n"
        "from cvkit.ops._kernels.cpu_assign import MODE_SSD, match_cpu\n"
        "match_cpu(_anchors(), _gt(1), torch.ones(1, 2, dtype=torch.bool), 0.5, 0.5, MODE_SSD)\n"
        "print(torch.get_num_threads())\n"
    )
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
