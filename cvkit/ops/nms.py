"""Non-maximum suppression: ``nms``, ``batched_nms`` and the whole-batch ``multiclass_nms``.

Semantics are torchvision's, with one rule torchvision leaves open: boxes of equal score are visited in
increasing index order, so CPU and CUDA keep the same boxes. A box is suppressed when an already kept,
higher-ranked box (of the same class) overlaps it with ``IoU > iou_threshold``; IoU is computed exactly as
torchvision's CPU kernel does (``inter / (area_kept + area_box - inter)``), so a pair sitting exactly on
the threshold is decided the same way.

Kernels: CPU tensors run numba kernels (one radix sort, then greedy NMS over a grid of kept boxes);
other devices run a batched torch implementation with no per-image Python loop
(``cvkit.ops._kernels.torch_nms``). ``backend="torch"`` forces the torch path on any device (that is how
CI checks the GPU algorithm on a CPU).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["nms", "batched_nms"]


def _check_nms_inputs(boxes: Tensor, scores: Tensor, name: str = "nms") -> None:
    if not isinstance(boxes, Tensor) or not isinstance(scores, Tensor):
        raise TypeError(f"{name}: boxes and scores must be torch.Tensors")
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"{name}: boxes must have shape [N, 4], got {tuple(boxes.shape)}")
    if scores.dim() != 1 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(f"{name}: scores must have shape [N] with N={boxes.shape[0]}, got {tuple(scores.shape)}")
    if boxes.device != scores.device:
        raise ValueError(f"{name}: boxes are on {boxes.device} but scores on {scores.device}")
    if not boxes.is_floating_point():
        raise TypeError(f"{name}: boxes must be floating point, got {boxes.dtype}")


def _use_numba(device: torch.device, backend: str) -> bool:
    if backend not in ("auto", "numba", "torch"):
        raise ValueError(f"backend must be 'auto', 'numba' or 'torch', got {backend!r}")
    if backend == "numba" and device.type != "cpu":
        raise ValueError(f"backend='numba' needs CPU tensors, got {device}")
    return backend == "numba" or (backend == "auto" and device.type == "cpu")


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, backend: str = "auto") -> Tensor:
    """Greedy non-maximum suppression.

    Args:
        boxes: ``[N, 4]`` xyxy boxes, float16/32/64 (float16 is computed in float32).
        scores: ``[N]`` scores.
        iou_threshold: boxes overlapping a kept box with ``IoU > iou_threshold`` are discarded.
        backend: "auto" (numba on CPU, torch elsewhere), "numba" or "torch".

    Returns:
        int64 ``[K]`` indices of the kept boxes, by decreasing score (equal scores: increasing index).
        Invariants: ``nms(boxes[keep], scores[keep], t)`` keeps everything; kept boxes pairwise have
        ``IoU <= t``.
    """
    _check_nms_inputs(boxes, scores)
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    if _use_numba(boxes.device, backend):
        from cvkit.ops._kernels.cpu_nms import nms_cpu

        return nms_cpu(boxes, scores, iou_threshold)
    from cvkit.ops._kernels.torch_nms import nms_torch

    return nms_torch(boxes, scores, None, iou_threshold)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float, backend: str = "auto") -> Tensor:
    """Greedy NMS applied independently per category ``idxs``.

    Args:
        boxes: ``[N, 4]`` xyxy boxes. scores: ``[N]``. idxs: ``[N]`` integer category of each box.
        iou_threshold: discard boxes with ``IoU > iou_threshold`` against a kept box of the same category.

    Returns:
        int64 ``[K]`` kept indices sorted by decreasing score (ties: increasing index). Equals the
        per-category ``nms`` results merged and sorted.
    """
    _check_nms_inputs(boxes, scores, "batched_nms")
    if idxs.shape != scores.shape:
        raise ValueError(f"batched_nms: idxs must have shape {tuple(scores.shape)}, got {tuple(idxs.shape)}")
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    if _use_numba(boxes.device, backend):
        from cvkit.ops._kernels.cpu_nms import batched_nms_cpu

        return batched_nms_cpu(boxes, scores, idxs, iou_threshold)
    from cvkit.ops._kernels.torch_nms import nms_torch

    return nms_torch(boxes, scores, idxs, iou_threshold)
