"""Box coding: ``encode_boxes`` / ``decode_boxes`` / ``BoxCoder`` (SSD and Faster R-CNN style deltas),
and the d2l book's ``multibox_detection``.

Glossary: B batch, A anchors, C foreground classes. Boxes are xyxy in any consistent unit (cvkit uses
absolute pixels); anchors and boxes broadcast against each other over leading dimensions.

Deltas follow torchvision's ``BoxCoder`` formula and order of operations (so results agree to the last
bit)::

    aw = ax2 - ax1,  acx = ax1 + 0.5 * aw     (same for y / h, and for the ground truth g)
    dx = wx * (gcx - acx) / aw,  dy = wy * (gcy - acy) / ah
    dw = ww * log(gw / aw),      dh = wh * log(gh / ah)

With the default weights ``(10, 10, 5, 5)`` these are SSD's targets with variances ``(0.1, 0.2)``.
Decoding clamps ``dw / ww`` and ``dh / wh`` at ``log(1000 / 16)`` before ``exp`` (the usual clamp that
keeps a wild prediction from overflowing).

Degenerate boxes (no NaN, see ``cvkit.ops.boxes``): encoding gives torchvision's value wherever that is a
number, infinite ones included, and 0 where torchvision divides 0 by 0:

- a ground truth of zero width (height) has ``dw = -inf`` (``dh = -inf``), which decodes back to width 0;
- an anchor of zero width (height) has ``dx = +-inf`` and ``dw = +inf`` (``dy``, ``dh``): no finite delta
  reaches another box from it, except that a coordinate equal to the anchor's gives 0 (``dx = 0`` for equal
  centres, ``dw = 0`` for a zero-width box: 0/0 -> 0, "no change"), which decodes back to the anchor's.

Invariant, for anchors of positive size whose log-size ratio is below the clamp (and the 0/0 cases
above): ``decode_boxes(encode_boxes(b, a), a) == b`` up to rounding. Decoding finite deltas on valid
anchors gives valid boxes (``x1 <= x2``; a zero-width anchor decodes to width 0 at its own x centre, and
likewise in y), finite unless the arithmetic overflows; decoding infinite deltas on a zero-size anchor
multiplies inf by 0 (NaN), as in torchvision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "DEFAULT_WEIGHTS",
    "BBOX_XFORM_CLIP",
    "encode_boxes",
    "decode_boxes",
    "BoxCoder",
    "multibox_detection",
]

#: SSD's weights: ``1 / variance`` for centres (0.1) and log-sizes (0.2).
DEFAULT_WEIGHTS: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
#: Clamp on ``dw / ww`` and ``dh / wh`` before ``exp`` when decoding (torchvision's default).
BBOX_XFORM_CLIP: float = math.log(1000.0 / 16)


def _check_weights(weights: Sequence[float]) -> tuple[float, float, float, float]:
    if len(weights) != 4:
        raise ValueError(f"weights must have 4 entries (wx, wy, ww, wh), got {len(weights)}")
    wx, wy, ww, wh = (float(w) for w in weights)
    if min(wx, wy, ww, wh) <= 0:
        raise ValueError(f"weights must be positive, got {tuple(weights)}")
    return wx, wy, ww, wh


def _check_last4(t: Tensor, name: str) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.shape[-1:] != (4,):
        raise ValueError(f"{name} must have shape [..., 4], got {tuple(t.shape)}")


def _float(t: Tensor) -> Tensor:
    return t if t.is_floating_point() else t.float()


def encode_boxes(gt_boxes: Tensor, anchors: Tensor, weights: Sequence[float] = DEFAULT_WEIGHTS) -> Tensor:
    """Encode xyxy ``gt_boxes`` ``[..., 4]`` relative to xyxy ``anchors`` ``[..., 4]`` -> deltas ``[..., 4]``.

    The two inputs broadcast (e.g. ``[B, A, 4]`` boxes against ``[A, 4]`` anchors). Deltas are
    ``(dx, dy, dw, dh)`` as in the module docstring; dtype is the promoted floating dtype of the inputs.
    Same argument order and values as torchvision's ``encode_boxes(reference_boxes, proposals, weights)``,
    except 0 where torchvision has 0/0 (NaN); zero-size boxes and anchors give +-inf (module docstring).
    """
    _check_last4(gt_boxes, "gt_boxes")
    _check_last4(anchors, "anchors")
    wx, wy, ww, wh = _check_weights(weights)
    dtype = torch.promote_types(_float(gt_boxes).dtype, _float(anchors).dtype)
    gt_boxes, anchors = gt_boxes.to(dtype), anchors.to(dtype)

    a_w = anchors[..., 2] - anchors[..., 0]
    a_h = anchors[..., 3] - anchors[..., 1]
    a_cx = anchors[..., 0] + 0.5 * a_w
    a_cy = anchors[..., 1] + 0.5 * a_h
    g_w = gt_boxes[..., 2] - gt_boxes[..., 0]
    g_h = gt_boxes[..., 3] - gt_boxes[..., 1]
    g_cx = gt_boxes[..., 0] + 0.5 * g_w
    g_cy = gt_boxes[..., 1] + 0.5 * g_h

    dx = _div_or_zero(wx * (g_cx - a_cx), a_w)
    dy = _div_or_zero(wy * (g_cy - a_cy), a_h)
    dw = ww * torch.log(_div_or_one(g_w, a_w))
    dh = wh * torch.log(_div_or_one(g_h, a_h))
    return torch.stack((dx, dy, dw, dh), dim=-1)


def _div_or_zero(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` (torchvision's value, +-inf included) with 0/0 -> 0."""
    return torch.where((num == 0) & (den == 0), torch.zeros_like(num), num / den)


def _div_or_one(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` with 0/0 -> 1: a zero size relative to a zero size is unchanged (log 0)."""
    return torch.where((num == 0) & (den == 0), torch.ones_like(num), num / den)


def decode_boxes(
    deltas: Tensor,
    anchors: Tensor,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    bbox_xform_clip: float = BBOX_XFORM_CLIP,
) -> Tensor:
    """Apply deltas ``[..., 4]`` to xyxy ``anchors`` ``[..., 4]`` -> xyxy boxes ``[..., 4]`` (broadcasting).

    ``dw / ww`` and ``dh / wh`` are clamped at ``bbox_xform_clip`` before ``exp``. Values equal
    torchvision's ``BoxCoder.decode_single`` for the same weights; integer deltas are read as float32.
    Invariant: ``decode_boxes(encode_boxes(b, a), a) == b`` up to rounding (see the module docstring).
    """
    _check_last4(deltas, "deltas")
    _check_last4(anchors, "anchors")
    wx, wy, ww, wh = _check_weights(weights)
    deltas = _float(deltas)
    anchors = anchors.to(deltas.dtype)

    widths = anchors[..., 2] - anchors[..., 0]
    heights = anchors[..., 3] - anchors[..., 1]
    ctr_x = anchors[..., 0] + 0.5 * widths
    ctr_y = anchors[..., 1] + 0.5 * heights

    dx = deltas[..., 0] / wx
    dy = deltas[..., 1] / wy
    dw = torch.clamp(deltas[..., 2] / ww, max=bbox_xform_clip)
    dh = torch.clamp(deltas[..., 3] / wh, max=bbox_xform_clip)

    pred_ctr_x = dx * widths + ctr_x
    pred_ctr_y = dy * heights + ctr_y
    pred_w = torch.exp(dw) * widths
    pred_h = torch.exp(dh) * heights
    half_w = 0.5 * pred_w
    half_h = 0.5 * pred_h
    return torch.stack(
        (pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h), dim=-1
    )


class BoxCoder:
    """Encode ground truth against anchors and decode predicted deltas, with fixed weights.

    ``BoxCoder()`` is SSD's coder (weights ``(10, 10, 5, 5)``); ``BoxCoder((1, 1, 1, 1))`` is the RPN's.
    ``coder.decode(coder.encode(b, a), a) == b`` up to rounding.
    """

    def __init__(
        self, weights: Sequence[float] = DEFAULT_WEIGHTS, bbox_xform_clip: float = BBOX_XFORM_CLIP
    ) -> None:
        self.weights = _check_weights(weights)
        self.bbox_xform_clip = float(bbox_xform_clip)

    def encode(self, gt_boxes: Tensor, anchors: Tensor) -> Tensor:
        """Deltas ``[..., 4]`` of xyxy ``gt_boxes`` relative to xyxy ``anchors`` (broadcasting)."""
        return encode_boxes(gt_boxes, anchors, self.weights)

    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """xyxy boxes ``[..., 4]`` from ``deltas`` applied to ``anchors`` (broadcasting)."""
        return decode_boxes(deltas, anchors, self.weights, self.bbox_xform_clip)

    def __repr__(self) -> str:
        return f"BoxCoder(weights={self.weights}, bbox_xform_clip={self.bbox_xform_clip:.4f})"


# ---------------------------------------------------------------------------------------------
# The d2l book's offsets ("Dive into Deep Learning", chapter "Anchor Boxes")
# ---------------------------------------------------------------------------------------------

#: The book's epsilon inside the log of ``offset_boxes``.
D2L_EPS = 1e-6


def _corner_to_center(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    # The book's conversion: centre (x1 + x2) / 2 (not x1 + 0.5 * w as in torchvision).
    x1, y1, x2, y2 = boxes.unbind(-1)
    return (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1


def d2l_encode(anchors: Tensor, assigned_boxes: Tensor, eps: float = D2L_EPS) -> Tensor:
    """The book's ``offset_boxes``: ``10 * dxy / wh_anchor`` and ``5 * log(eps + wh_box / wh_anchor)``.

    xyxy ``anchors`` and ``assigned_boxes`` ``[..., 4]`` (broadcasting) -> offsets ``[..., 4]``.
    """
    acx, acy, aw, ah = _corner_to_center(anchors)
    bcx, bcy, bw, bh = _corner_to_center(assigned_boxes)
    return torch.stack(
        (
            10 * (bcx - acx) / aw,
            10 * (bcy - acy) / ah,
            5 * torch.log(eps + bw / aw),
            5 * torch.log(eps + bh / ah),
        ),
        dim=-1,
    )


def d2l_decode(anchors: Tensor, offset_preds: Tensor) -> Tensor:
    """The book's ``offset_inverse``: xyxy ``anchors`` and offsets ``[..., 4]`` -> xyxy boxes ``[..., 4]``."""
    acx, acy, aw, ah = _corner_to_center(anchors)
    offset_preds = _float(offset_preds)
    cx = (offset_preds[..., 0] * aw / 10) + acx
    cy = (offset_preds[..., 1] * ah / 10) + acy
    w = torch.exp(offset_preds[..., 2] / 5) * aw
    h = torch.exp(offset_preds[..., 3] / 5) * ah
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def multibox_detection(
    cls_probs: Tensor,
    offset_preds: Tensor,
    anchors: Tensor,
    nms_threshold: float = 0.5,
    pos_threshold: float = 0.009999999,
) -> Tensor:
    """The d2l book's ``multibox_detection``: decode, class-agnostic NMS, one row per anchor.

    Args:
        cls_probs: ``[B, C + 1, A]`` class probabilities, background at index 0.
        offset_preds: ``[B, A * 4]`` predicted offsets (the book's 10/5 factors, see ``d2l_decode``).
        anchors: ``[1, A, 4]`` (or ``[A, 4]``) xyxy anchors, normalized or not.
        nms_threshold: a box is suppressed when ``IoU > nms_threshold`` with a kept box of higher
            confidence (any class).
        pos_threshold: rows whose confidence is below it become background.

    Returns:
        ``[B, A, 6]`` float rows ``(class_id, confidence, x1, y1, x2, y2)``: first the kept boxes by
        decreasing confidence, then the suppressed ones by increasing anchor index. ``class_id`` is the
        foreground class ``0..C-1``, or ``-1`` for suppressed rows and rows with confidence below
        ``pos_threshold``; those below ``pos_threshold`` report ``1 - confidence``. Boxes are not
        clipped.

    Equal confidences are visited in increasing anchor index (the book leaves that order to
    ``torch.argsort``). The whole batch runs through one ``batched_nms`` call, with no per-image loop.
    """
    from cvkit.ops.nms import batched_nms

    if cls_probs.dim() != 3:
        raise ValueError(f"cls_probs must have shape [B, C + 1, A], got {tuple(cls_probs.shape)}")
    batch, num_cls, num_anchors = cls_probs.shape
    if num_cls < 2:
        raise ValueError(f"cls_probs needs a background row and at least one class, got {num_cls} rows")
    anchors = anchors.reshape(-1, 4)
    if anchors.shape[0] != num_anchors:
        raise ValueError(f"anchors hold {anchors.shape[0]} boxes but cls_probs has {num_anchors} anchors")
    if offset_preds.shape != (batch, num_anchors * 4):
        raise ValueError(
            f"offset_preds must have shape {(batch, num_anchors * 4)}, got {tuple(offset_preds.shape)}"
        )
    device = cls_probs.device
    cls_probs = _float(cls_probs)

    conf, class_id = torch.max(cls_probs[:, 1:], dim=1)  # [B, A] each; ties: lowest class
    boxes = d2l_decode(anchors, offset_preds.reshape(batch, num_anchors, 4))  # [B, A, 4]

    # One NMS call for the whole batch: the image index is the category.
    image_idx = torch.arange(batch, device=device).repeat_interleave(num_anchors)
    keep = batched_nms(boxes.reshape(-1, 4), conf.reshape(-1), image_idx, nms_threshold)
    # Sort key per anchor: its position in `keep` (decreasing score over the whole batch, so also within
    # each image), or B * A + anchor index for suppressed anchors (after every kept one, by index).
    total = batch * num_anchors
    flat_key = torch.arange(num_anchors, device=device).repeat(batch) + total
    flat_key[keep] = torch.arange(keep.numel(), device=device)
    kept = flat_key < total
    order = torch.argsort(flat_key.reshape(batch, num_anchors), dim=1)  # keys are distinct

    class_id = torch.where(kept.reshape(batch, num_anchors), class_id, torch.full_like(class_id, -1))
    class_id = torch.gather(class_id, 1, order)
    conf = torch.gather(conf, 1, order)
    boxes = torch.gather(boxes, 1, order[..., None].expand(-1, -1, 4))
    below = conf < pos_threshold
    class_id = torch.where(below, torch.full_like(class_id, -1), class_id)
    conf = torch.where(below, 1 - conf, conf)
    return torch.cat((class_id.unsqueeze(-1).to(conf.dtype), conf.unsqueeze(-1), boxes), dim=-1)
