"""Box utilities: format conversion, area, clipping, and the pairwise IoU family.

Glossary: N, M numbers of boxes. Boxes are ``(x1, y1, x2, y2)`` ("xyxy") in continuous absolute
coordinates (no +1 on widths) unless a function takes a format. Valid boxes satisfy ``x1 <= x2`` and
``y1 <= y2``: points, zero-width and zero-height boxes are valid, and so are huge and negative coordinates.

Semantics follow ``torchvision.ops`` function for function. Every op accepts CPU and CUDA tensors,
returns a typed empty result for empty input and never modifies its inputs.

**No NaN** (every op of ``cvkit.ops``, both kernels): on valid finite boxes the result is torchvision's
wherever torchvision's is a number; where torchvision divides 0 by 0 (NaN), cvkit returns the value the
formula tends to without the degenerate term:

- IoU: a union of 0 (two zero-area boxes) gives IoU 0;
- GIoU: an enclosing area of 0 gives no penalty (GIoU = IoU);
- DIoU: a zero diagonal (only with ``eps = 0``: two equal points) gives no distance penalty;
- CIoU: a point's aspect term ``atan(w / h)`` is ``atan(0 / 0) = 0`` (``atan(w / 0) = +-pi/2`` as in
  torchvision), and ``alpha = v / (1 - iou + v + eps)`` is 0 where that denominator is 0;
- NMS keeps torchvision's rule (a NaN overlap suppresses nothing): zero-area boxes are never suppressed
  and suppress nothing when ``iou_threshold >= 0``;
- box coding (``cvkit.ops.coder``) gives +-inf where a ratio is unbounded and 0 for 0/0.

Gradients through the torch expressions stay finite on valid boxes.

Dtypes: the IoU family computes float16/bfloat16 and integer boxes in float32 (int64 in float64) on both
kernels and returns float32 (float64 for float64 input), as torchvision returns them; convert, area, clip
and remove_small_boxes keep torchvision's dtypes (integer areas are integers: int32 wraps past 2**31).

The IoU family dispatches on the input (``_use_cpu_kernel``): 2-D CPU tensors that need no gradient go
through a fused numba kernel (extra memory: the output plus O(N + M)); tensors that require grad, batched
inputs and CUDA tensors go through the differentiable torch expressions below, which compute the same values.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "box_convert",
    "box_area",
    "clip_boxes_to_image",
    "remove_small_boxes",
    "box_iou",
    "generalized_box_iou",
    "distance_box_iou",
    "complete_box_iou",
]

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")


def _check_fmt(fmt: str, arg: str) -> None:
    if fmt not in BOX_FORMATS:
        raise ValueError(f"{arg}={fmt!r} is not a box format; expected one of {BOX_FORMATS}")


def _check_boxes(boxes: Tensor, name: str = "boxes") -> None:
    if not isinstance(boxes, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(boxes).__name__}")
    if boxes.shape[-1:] != (4,):
        raise ValueError(f"{name} must have shape [..., 4], got {tuple(boxes.shape)}")


def _to_xyxy(boxes: Tensor, fmt: str) -> Tensor:
    if fmt == "xyxy":
        return boxes
    a, b, c, d = boxes.unbind(-1)
    if fmt == "xywh":
        return torch.stack((a, b, a + c, b + d), dim=-1)
    # cxcywh
    return torch.stack((a - 0.5 * c, b - 0.5 * d, a + 0.5 * c, b + 0.5 * d), dim=-1)


def _from_xyxy(boxes: Tensor, fmt: str) -> Tensor:
    if fmt == "xyxy":
        return boxes
    x1, y1, x2, y2 = boxes.unbind(-1)
    if fmt == "xywh":
        return torch.stack((x1, y1, x2 - x1, y2 - y1), dim=-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert boxes ``[..., 4]`` between "xyxy", "xywh" (x1, y1, w, h) and "cxcywh" (cx, cy, w, h).

    Returns a new tensor (a copy when the formats are equal); dtype and device are kept.
    Invariant: ``box_convert(box_convert(b, f, g), g, f) == b`` up to floating-point rounding.
    """
    _check_boxes(boxes)
    _check_fmt(in_fmt, "in_fmt")
    _check_fmt(out_fmt, "out_fmt")
    if in_fmt == out_fmt:
        return boxes.clone()
    return _from_xyxy(_to_xyxy(boxes, in_fmt), out_fmt)


def _upcast(t: Tensor) -> Tensor:
    # Products of float16 coordinates overflow early: compute areas in float32, as torchvision does.
    if t.is_floating_point():
        return t if t.dtype in (torch.float32, torch.float64) else t.float()
    return t if t.dtype in (torch.int32, torch.int64) else t.int()


def box_area(boxes: Tensor, fmt: str = "xyxy") -> Tensor:
    """Area of boxes ``[..., 4]`` -> ``[...]``; float16 is upcast to float32.

    Inverted boxes (x2 < x1 xor y2 < y1) get a negative area, as in torchvision.
    """
    _check_boxes(boxes)
    _check_fmt(fmt, "fmt")
    boxes = _upcast(boxes)
    if fmt == "xyxy":
        return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    return boxes[..., 2] * boxes[..., 3]


def clip_boxes_to_image(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clip xyxy boxes ``[..., 4]`` to an image of ``size = (height, width)``: 0 <= x <= W, 0 <= y <= H."""
    _check_boxes(boxes)
    height, width = size
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack((x, y), dim=-1).reshape(boxes.shape)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices (int64 ``[K]``) of the xyxy boxes ``[N, 4]`` whose width and height are both >= min_size."""
    _check_boxes(boxes)
    widths = boxes[..., 2] - boxes[..., 0]
    heights = boxes[..., 3] - boxes[..., 1]
    return torch.where((widths >= min_size) & (heights >= min_size))[0]


# ---------------------------------------------------------------------------------------------
# Pairwise IoU family
# ---------------------------------------------------------------------------------------------


def _use_cpu_kernel(boxes1: Tensor, boxes2: Tensor) -> bool:
    return (
        boxes1.device.type == "cpu"
        and boxes2.device.type == "cpu"
        and boxes1.dim() == 2
        and boxes2.dim() == 2
        and not (torch.is_grad_enabled() and (boxes1.requires_grad or boxes2.requires_grad))
        and not torch.jit.is_scripting()
        and not torch.jit.is_tracing()
    )


def _pairwise_inputs(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor, torch.dtype]:
    """Both box sets in the working dtype (float64 for float64 and int64, else float32) and the output dtype.

    Converting before any arithmetic keeps the two kernels equal and avoids integer wrap-around (torchvision
    subtracts uint8/int16 coordinates in their own dtype) and float16 overflow.
    """
    _check_boxes(boxes1, "boxes1")
    _check_boxes(boxes2, "boxes2")
    if boxes1.device != boxes2.device:
        raise ValueError(f"boxes1 is on {boxes1.device} but boxes2 is on {boxes2.device}")
    common = torch.promote_types(boxes1.dtype, boxes2.dtype)
    work = torch.float64 if common in (torch.float64, torch.int64) else torch.float32
    out = torch.float64 if common == torch.float64 else torch.float32
    return boxes1.to(work), boxes2.to(work), out


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` where ``den > 0``, else 0; gradients stay finite on both branches."""
    positive = den > 0
    return torch.where(positive, num / torch.where(positive, den, torch.ones_like(den)), torch.zeros_like(num))


def _inter_union(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    lt = torch.max(boxes1[..., :, None, :2], boxes2[..., None, :, :2])  # [..., N, M, 2]
    rb = torch.min(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])  # [..., N, M, 2]
    wh = _upcast(rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[..., :, None] + area2[..., None, :] - inter
    return inter, union


def _enclosing_wh(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    lti = torch.min(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    rbi = torch.max(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    return _upcast(rbi - lti).clamp(min=0)  # [..., N, M, 2]


def _iou_torch(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    inter, union = _inter_union(boxes1, boxes2)
    return _safe_div(inter, union)


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU of xyxy boxes ``[N, 4]`` and ``[M, 4]`` -> ``[N, M]`` (leading batch dims allowed).

    ``iou = inter / union`` with ``union = area1 + area2 - inter``; a non-positive union gives 0
    (torchvision gives NaN there). Symmetric, in [0, 1] for valid boxes; float16 returns float32.
    """
    boxes1, boxes2, out = _pairwise_inputs(boxes1, boxes2)
    if _use_cpu_kernel(boxes1, boxes2):
        from cvkit.ops._kernels.cpu_boxes import pairwise_cpu

        return pairwise_cpu(boxes1, boxes2, "iou").to(out)
    return _iou_torch(boxes1, boxes2).to(out)


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise generalized IoU ``[N, M]`` in [-1, 1]: ``iou - (enclose - union) / enclose``.

    ``enclose`` is the area of the smallest box containing both; when it is 0 the penalty is 0.
    """
    boxes1, boxes2, out = _pairwise_inputs(boxes1, boxes2)
    if _use_cpu_kernel(boxes1, boxes2):
        from cvkit.ops._kernels.cpu_boxes import pairwise_cpu

        return pairwise_cpu(boxes1, boxes2, "giou").to(out)
    inter, union = _inter_union(boxes1, boxes2)
    iou = _safe_div(inter, union)
    whi = _enclosing_wh(boxes1, boxes2)
    enclose = whi[..., 0] * whi[..., 1]
    return (iou - _safe_div(enclose - union, enclose)).to(out)


def _diou_iou(boxes1: Tensor, boxes2: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    iou = _iou_torch(boxes1, boxes2)
    whi = _enclosing_wh(boxes1, boxes2)
    diag2 = (whi[..., 0] ** 2) + (whi[..., 1] ** 2) + eps
    x_p = (boxes1[..., 0] + boxes1[..., 2]) / 2
    y_p = (boxes1[..., 1] + boxes1[..., 3]) / 2
    x_g = (boxes2[..., 0] + boxes2[..., 2]) / 2
    y_g = (boxes2[..., 1] + boxes2[..., 3]) / 2
    centre2 = (_upcast(x_p[..., :, None] - x_g[..., None, :]) ** 2) + (
        _upcast(y_p[..., :, None] - y_g[..., None, :]) ** 2
    )
    return iou - _safe_div(centre2, diag2), iou


def distance_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Pairwise distance IoU ``[N, M]``: ``iou - d_centres^2 / (diag_enclose^2 + eps)``.

    ``d_centres`` is the distance of the box centres, ``diag_enclose`` the diagonal of the smallest box
    containing both; a zero denominator (``eps = 0`` and two equal points) gives no penalty.
    """
    boxes1, boxes2, out = _pairwise_inputs(boxes1, boxes2)
    if _use_cpu_kernel(boxes1, boxes2):
        from cvkit.ops._kernels.cpu_boxes import pairwise_cpu

        return pairwise_cpu(boxes1, boxes2, "diou", eps).to(out)
    return _diou_iou(boxes1, boxes2, eps)[0].to(out)


def _atan_ratio(w: Tensor, h: Tensor) -> Tensor:
    """``atan(w / h)`` as torchvision computes it (``atan(w / +-0) = +-pi/2``), with ``atan(0 / 0) = 0``.

    No division by zero is evaluated, so the gradient stays finite (0 through the ``h == 0`` branch).
    """
    zero_h = h == 0
    ratio = torch.atan(w / torch.where(zero_h, torch.ones_like(h), h))
    # sign(w) * copysign(pi/2, h): the sign of a zero height matters, as it does for w / h; sign(0) = 0
    edge = torch.sign(w) * torch.copysign(torch.full_like(ratio, math.pi / 2), h)
    return torch.where(zero_h, edge, ratio)


def complete_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Pairwise complete IoU ``[N, M]``: DIoU minus ``alpha * v`` with the aspect-ratio term ``v``.

    ``v = 4 / pi^2 * (atan(w1 / h1) - atan(w2 / h2))^2``, ``alpha = v / (1 - iou + v + eps)`` (no gradient
    through ``alpha``, as in the CIoU paper and torchvision). A point's ``atan(0 / 0)`` is 0 and a zero
    denominator gives ``alpha = 0`` (see the module docstring).
    """
    boxes1, boxes2, out = _pairwise_inputs(boxes1, boxes2)
    if _use_cpu_kernel(boxes1, boxes2):
        from cvkit.ops._kernels.cpu_boxes import pairwise_cpu

        return pairwise_cpu(boxes1, boxes2, "ciou", eps).to(out)
    diou, iou = _diou_iou(boxes1, boxes2, eps)
    atan1 = _atan_ratio(boxes1[..., 2] - boxes1[..., 0], boxes1[..., 3] - boxes1[..., 1])
    atan2 = _atan_ratio(boxes2[..., 2] - boxes2[..., 0], boxes2[..., 3] - boxes2[..., 1])
    v = (4 / (torch.pi**2)) * torch.pow(atan1[..., :, None] - atan2[..., None, :], 2)
    with torch.no_grad():
        alpha = _safe_div(v, 1 - iou + v + eps)
    return (diou - alpha * v).to(out)
