"""Non-maximum suppression: ``nms``, ``batched_nms`` and the whole-batch ``multiclass_nms``.

Semantics are torchvision's, with one rule torchvision leaves open: boxes of equal score are visited in
increasing index order, so CPU and CUDA keep the same boxes. A box is suppressed when an already kept,
higher-ranked box (of the same class) overlaps it with ``IoU > iou_threshold``; IoU is computed exactly as
torchvision's CPU kernel does (``inter / (area_kept + area_box - inter)``), so a pair sitting exactly on
the threshold is decided the same way.

Kernels: CPU tensors run numba kernels (one radix sort, then greedy NMS over a grid of kept boxes).
On CUDA, ``nms`` and ``batched_nms`` run two Triton kernels (a suppression bitmask per class, then one
greedy scan per class: ``cvkit.ops._kernels.triton_nms``) when triton is installed, and
``multiclass_nms`` a batched torch implementation with no per-image Python loop
(``cvkit.ops._kernels.torch_nms``), which is also the fallback. ``backend="torch"`` forces the torch
path on any device (that is how CI checks the GPU algorithm on a CPU); the Triton kernels run on CPU
tensors under ``TRITON_INTERPRET=1``, which is how CI checks them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["nms", "batched_nms", "multiclass_nms", "MulticlassNMSResult"]


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
    if backend not in ("auto", "numba", "torch", "triton"):
        raise ValueError(f"backend must be 'auto', 'numba', 'torch' or 'triton', got {backend!r}")
    if backend == "numba" and device.type != "cpu":
        raise ValueError(f"backend='numba' needs CPU tensors, got {device}")
    return backend == "numba" or (backend == "auto" and device.type == "cpu")


def _use_triton(device: torch.device, backend: str) -> bool:
    """Triton kernels for ``nms`` / ``batched_nms``: on CUDA by default, or when asked for."""
    from cvkit.ops._kernels import triton_nms

    if backend == "triton":
        if not triton_nms.available(device):
            raise ValueError(
                f"backend='triton' needs triton and a CUDA tensor (or TRITON_INTERPRET=1 on CPU), got {device}"
            )
        return True
    return backend == "auto" and triton_nms.available(device)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, backend: str = "auto") -> Tensor:
    """Greedy non-maximum suppression.

    Args:
        boxes: ``[N, 4]`` xyxy boxes, float16/32/64 (float16 is computed in float32).
        scores: ``[N]`` scores.
        iou_threshold: boxes overlapping a kept box with ``IoU > iou_threshold`` are discarded.
        backend: "auto" (numba on CPU, Triton on CUDA when triton is installed, else torch), "numba",
            "torch" or "triton".

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

    return nms_torch(boxes, scores, None, iou_threshold, use_triton=_use_triton(boxes.device, backend))


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

    return nms_torch(boxes, scores, idxs, iou_threshold, use_triton=_use_triton(boxes.device, backend))


class MulticlassNMSResult(NamedTuple):
    """Padded detections of a batch.

    detections: ``[B, K, 6]`` rows ``(x1, y1, x2, y2, score, label)`` sorted by decreasing score,
        ``K = max_detections``; rows past ``num_detections[b]`` are padding: zeros with label -1.
    num_detections: int64 ``[B]``, the number of valid rows per image.
    """

    detections: Tensor
    num_detections: Tensor

    def split(self) -> list[Tensor]:
        """Per-image ``[n_b, 6]`` views without the padding."""
        return [d[: int(n)] for d, n in zip(self.detections, self.num_detections.tolist())]


def multiclass_nms(
    boxes: Tensor,
    scores: Tensor,
    score_thresh: float = 0.05,
    iou_thresh: float = 0.5,
    pre_nms_topk: int = 1000,
    max_detections: int = 100,
    class_agnostic: bool = False,
    soft_nms: str | None = None,
    sigma: float = 0.5,
    backend: str = "auto",
) -> MulticlassNMSResult:
    """Per-image multi-class NMS for a whole batch of detector outputs in one call.

    Args:
        boxes: ``[B, N, 4]`` (one box per anchor, shared by all classes) or ``[B, N, C, 4]``
            (class-specific boxes), xyxy.
        scores: ``[B, N, C]`` per-class scores, foreground classes only (drop the background column).
        score_thresh: candidates need ``score > score_thresh`` (soft-NMS also drops boxes whose decayed
            score falls to ``<= score_thresh``).
        iou_thresh: IoU above which a kept box suppresses (hard) or decays (linear soft-NMS) another.
        pre_nms_topk: candidates per image and class (per image when ``class_agnostic``) kept by score
            before NMS; ``<= 0`` keeps all.
        max_detections: detections kept per image after merging classes (K).
        class_agnostic: suppress across classes (each (anchor, class) pair is one candidate).
        soft_nms: None (hard NMS), "linear" (``s *= 1 - IoU`` when ``IoU > iou_thresh``) or "gaussian"
            (``s *= exp(-IoU^2 / sigma)``); a decayed box keeps its decayed score in the output.
        sigma: Gaussian soft-NMS width (> 0).
        backend: "auto" (numba on CPU, batched torch elsewhere), "numba" or "torch".

    Returns:
        :class:`MulticlassNMSResult` ``(detections [B, K, 6], num_detections [B])``. Labels index the C
        axis of ``scores``. Order: score descending; equal scores by class, then by rank in the class
        (anchor index for equal scores). Hard NMS gives identical results on every backend.
    """
    if boxes.dim() not in (3, 4) or boxes.shape[-1] != 4:
        raise ValueError(f"multiclass_nms: boxes must be [B, N, 4] or [B, N, C, 4], got {tuple(boxes.shape)}")
    if scores.dim() != 3 or scores.shape[:2] != boxes.shape[:2]:
        raise ValueError(
            f"multiclass_nms: scores must be [B, N, C] matching boxes {tuple(boxes.shape)}, got {tuple(scores.shape)}"
        )
    if boxes.dim() == 4 and boxes.shape[2] != scores.shape[2]:
        raise ValueError(f"multiclass_nms: boxes have {boxes.shape[2]} classes but scores {scores.shape[2]}")
    if soft_nms not in (None, "linear", "gaussian"):
        raise ValueError(f"soft_nms must be None, 'linear' or 'gaussian', got {soft_nms!r}")
    if soft_nms == "gaussian" and not sigma > 0:
        raise ValueError(f"sigma must be > 0 for Gaussian soft-NMS, got {sigma}")
    if max_detections < 0:
        raise ValueError(f"max_detections must be >= 0, got {max_detections}")
    if boxes.device != scores.device:
        raise ValueError(f"multiclass_nms: boxes are on {boxes.device} but scores on {scores.device}")
    if backend == "triton":
        raise ValueError("multiclass_nms has no Triton kernel (its batched torch path is the GPU path): use 'auto'")
    args = (boxes, scores, float(score_thresh), float(iou_thresh), int(pre_nms_topk), int(max_detections),
            bool(class_agnostic), soft_nms, float(sigma))
    if scores.numel() == 0 or max_detections == 0:
        from cvkit.ops._kernels.torch_nms import work_dtype

        dets = torch.zeros(scores.shape[0], max_detections, 6, dtype=work_dtype(boxes), device=boxes.device)
        dets[..., 5] = -1
        return MulticlassNMSResult(dets, torch.zeros(scores.shape[0], dtype=torch.int64, device=boxes.device))
    if _use_numba(boxes.device, backend):
        from cvkit.ops._kernels.cpu_multiclass import multiclass_nms_cpu

        return MulticlassNMSResult(*multiclass_nms_cpu(*args))
    from cvkit.ops._kernels.torch_nms import multiclass_nms_torch

    return MulticlassNMSResult(*multiclass_nms_torch(*args))
