"""Greedy (batched) NMS on the GPU with two Triton kernels: a suppression bitmask, then one scan per class.

Candidates are sorted once by (class, score desc, index asc), so each class is a contiguous segment.

1. ``_mask_kernel``: for every box ``i`` and every 64-wide word ``w`` of its class segment, the bit ``b``
   of ``mask[i, w]`` says that ``i`` suppresses the box at segment position ``64 w + b`` (a later box of
   the same class with ``IoU > t``). The IoU is computed with the expression and operation order of the
   numba kernels and torchvision's CPU kernel, ``inter / (area_i + area_j - inter)``, with floating-point
   contraction (FMA) switched off and a correctly rounded division, so CPU and GPU decide alike, also for
   pairs exactly on the threshold.
2. ``_scan_kernel``: one program per class walks its segment in order, keeping the suppressed-bits of
   the kept boxes in registers (``removed |= mask[i]`` for each kept ``i``): the greedy rule, exactly.

Memory: ``N * ceil(K / 64)`` int64 words, ``K`` the largest class. Classes larger than
``MAX_SEGMENT`` boxes use the batched torch path instead (``cvkit.ops._kernels.torch_nms``), whose
memory does not grow with ``K``.

With ``TRITON_INTERPRET=1`` (set before triton is imported) the same kernels run on CPU tensors in
Triton's interpreter: that is how CI, which has no GPU, tests them.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

try:  # triton comes with CUDA builds of torch; CPU-only installs go without it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None
    tl = None

# The largest class segment (boxes of one class) the Triton path takes: the scan keeps
# ceil(MAX_SEGMENT / 64) words of suppressed-bits in registers.
MAX_SEGMENT = 8192
_ROWS = 64  # rows per mask program


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def available(device: torch.device) -> bool:
    """Whether the Triton kernels can run on ``device`` (CUDA, or any device under the interpreter)."""
    if triton is None:
        return False
    return device.type == "cuda" or (interpreted() and device.type == "cpu")


if triton is not None:

    @triton.jit
    def _mask_kernel(
        boxes_ptr,  # [N, 4] sorted by (class, score desc), contiguous
        seg_start_ptr,  # [N] int64: first row of each row's class segment
        seg_len_ptr,  # [N] int64: length of each row's class segment
        thr_ptr,  # [1] threshold in the boxes' dtype
        mask_ptr,  # [N, num_words] int64 out
        n,
        num_words,
        ROWS: tl.constexpr,
        IS_F64: tl.constexpr,
    ):
        pid_r = tl.program_id(0)
        word = tl.program_id(1)
        rows = pid_r * ROWS + tl.arange(0, ROWS)
        row_ok = rows < n
        start = tl.load(seg_start_ptr + rows, mask=row_ok, other=0)
        length = tl.load(seg_len_ptr + rows, mask=row_ok, other=0)
        pos = rows - start
        bits = tl.arange(0, 64)
        col_pos = word * 64 + bits  # [64] positions in the segment
        valid = row_ok[:, None] & (col_pos[None, :] < length[:, None]) & (col_pos[None, :] > pos[:, None])
        cols = start[:, None] + col_pos[None, :]  # [ROWS, 64] global rows of the candidates
        rx1 = tl.load(boxes_ptr + rows * 4 + 0, mask=row_ok, other=0)
        ry1 = tl.load(boxes_ptr + rows * 4 + 1, mask=row_ok, other=0)
        rx2 = tl.load(boxes_ptr + rows * 4 + 2, mask=row_ok, other=0)
        ry2 = tl.load(boxes_ptr + rows * 4 + 3, mask=row_ok, other=0)
        cx1 = tl.load(boxes_ptr + cols * 4 + 0, mask=valid, other=0)
        cy1 = tl.load(boxes_ptr + cols * 4 + 1, mask=valid, other=0)
        cx2 = tl.load(boxes_ptr + cols * 4 + 2, mask=valid, other=0)
        cy2 = tl.load(boxes_ptr + cols * 4 + 3, mask=valid, other=0)
        area_r = (rx2 - rx1) * (ry2 - ry1)
        area_c = (cx2 - cx1) * (cy2 - cy1)
        w = tl.minimum(rx2[:, None], cx2) - tl.maximum(rx1[:, None], cx1)
        h = tl.minimum(ry2[:, None], cy2) - tl.maximum(ry1[:, None], cy1)
        inter = tl.maximum(w, 0.0) * tl.maximum(h, 0.0)
        union = (area_r[:, None] + area_c) - inter
        if IS_F64:
            iou = inter / union  # float64 division is correctly rounded
        else:
            iou = tl.math.div_rn(inter, union)  # not the approximate float32 division
        thr = tl.load(thr_ptr)
        hit = valid & (iou > thr)  # NaN (0/0 of degenerate boxes) never suppresses
        one = tl.full([ROWS, 64], 1, tl.int64)
        packed = tl.sum(tl.where(hit, one << bits[None, :].to(tl.int64), 0), axis=1)  # distinct bits: sum == or
        tl.store(mask_ptr + rows.to(tl.int64) * num_words + word, packed, mask=row_ok)

    @triton.jit
    def _scan_kernel(
        mask_ptr,  # [N, num_words] int64
        seg_first_ptr,  # [S] int64: first row of each segment
        seg_count_ptr,  # [S] int64: rows in each segment
        keep_ptr,  # [N] int8 out (zero-initialised)
        num_words,
        WORDS: tl.constexpr,
    ):
        seg = tl.program_id(0)
        first = tl.load(seg_first_ptr + seg)
        count = tl.load(seg_count_ptr + seg)
        offs = tl.arange(0, WORDS)
        removed = tl.zeros([WORDS], dtype=tl.int64)
        for p in range(0, count):
            cur = tl.sum(tl.where(offs == p // 64, removed, 0))
            if ((cur >> (p % 64)) & 1) == 0:
                row = first + p
                tl.store(keep_ptr + row, 1)
                removed = removed | tl.load(mask_ptr + row * num_words + offs, mask=offs < num_words, other=0)


def _segments(cls_sorted: Tensor) -> tuple[Tensor, Tensor]:
    """First row and length of each run of equal classes in ``cls_sorted``."""
    _, counts = torch.unique_consecutive(cls_sorted, return_counts=True)
    first = torch.cumsum(counts, 0) - counts
    return first, counts


def nms_sorted(sboxes: Tensor, cls_sorted: Tensor, iou_threshold: float) -> Tensor | None:
    """Greedy NMS of boxes sorted by (class, score desc); bool ``[N]`` keep flags in that order.

    Returns None when the largest class exceeds ``MAX_SEGMENT`` (the caller then uses the torch path).
    ``iou_threshold`` must already be adjusted for the boxes' dtype (``threshold_for``).
    """
    assert triton is not None
    n = sboxes.shape[0]
    device = sboxes.device
    first, counts = _segments(cls_sorted)
    largest = int(counts.max())
    if largest > MAX_SEGMENT:
        return None
    num_words = (largest + 63) // 64
    seg_start = torch.repeat_interleave(first, counts, output_size=n)
    seg_len = torch.repeat_interleave(counts, counts, output_size=n)
    thr = torch.tensor([iou_threshold], dtype=sboxes.dtype, device=device)
    mask = torch.empty(n, num_words, dtype=torch.int64, device=device)
    keep = torch.zeros(n, dtype=torch.int8, device=device)
    boxes = sboxes.contiguous()
    extra = {} if interpreted() else {"enable_fp_fusion": False}
    _mask_kernel[(triton.cdiv(n, _ROWS), num_words)](
        boxes,
        seg_start,
        seg_len,
        thr,
        mask,
        n,
        num_words,
        ROWS=_ROWS,
        IS_F64=boxes.dtype == torch.float64,
        num_warps=4,
        **extra,
    )
    words = max(2, triton.next_power_of_2(num_words))
    _scan_kernel[(counts.shape[0],)](
        mask, first, counts, keep, num_words, WORDS=words, num_warps=1 if words <= 32 else 4
    )
    return keep.bool()
