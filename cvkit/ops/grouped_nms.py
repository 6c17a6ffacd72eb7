"""``grouped_nms_mask``: greedy NMS in G groups of K boxes at once, answered as a fixed-shape keep mask.

Glossary: G groups (e.g. image x class), K candidates per group. Boxes xyxy.

The result has the shape of the input (``[G, K]`` bool), not a list of kept indices, so a graph that uses it
keeps static shapes: this is the NMS inside the exported detectors of ``cvkit export --with-postprocess``.
Within each group the semantics are :func:`cvkit.ops.nms.nms`'s over the boxes with ``score > score_threshold``
(the others are False and suppress nothing): a box is dropped when a kept box of higher score (equal scores:
lower index) overlaps it with ``IoU > iou_threshold``; groups never suppress each other.

It is a ``torch.library`` custom op (``torch.ops.cvkit.grouped_nms_mask``) so that ``torch.export`` sees one
node with a known output shape; :func:`onnx_translation` maps that node to ONNX's ``NonMaxSuppression``
(groups as its batch axis, one class), so the ONNX graph needs no coordinate-offset trick and no loop.
:func:`grouped_nms_mask_torchvision` is the same mask from ``torchvision.ops.nms`` (a scripted loop over the
groups) for TorchScript graphs, which then load wherever torchvision's ops are (no cvkit import needed).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["grouped_nms_mask", "grouped_nms_mask_torchvision", "onnx_translation"]


def _check(boxes: Tensor, scores: Tensor) -> None:
    if scores.dim() != 2 or boxes.shape != (*scores.shape, 4):
        raise ValueError(f"grouped_nms_mask: boxes must be [G, K, 4] and scores [G, K], got "
                         f"{tuple(boxes.shape)} and {tuple(scores.shape)}")


@torch.library.custom_op("cvkit::grouped_nms_mask", mutates_args=())
def grouped_nms_mask(boxes: Tensor, scores: Tensor, iou_threshold: float, score_threshold: float) -> Tensor:
    """``[G, K, 4]`` boxes, ``[G, K]`` scores -> bool ``[G, K]``: True where the box survives NMS in its group."""
    from cvkit.ops.nms import batched_nms

    _check(boxes, scores)
    groups, k = scores.shape
    mask = torch.zeros(groups * k, dtype=torch.bool, device=scores.device)
    flat_scores = scores.reshape(-1)
    candidates = (flat_scores > score_threshold).nonzero().flatten()
    if len(candidates):
        ids = torch.div(candidates, k, rounding_mode="floor")
        keep = batched_nms(boxes.reshape(-1, 4)[candidates], flat_scores[candidates], ids, iou_threshold)
        mask[candidates[keep]] = True
    return mask.reshape(groups, k)


@grouped_nms_mask.register_fake
def _grouped_nms_mask_fake(boxes: Tensor, scores: Tensor, iou_threshold: float, score_threshold: float) -> Tensor:
    return torch.empty_like(scores, dtype=torch.bool)


def _nms_per_group(boxes: Tensor, scores: Tensor, iou_threshold: float, score_threshold: float) -> Tensor:
    mask = torch.zeros_like(scores, dtype=torch.bool)
    for g in range(scores.shape[0]):
        above = (scores[g] > score_threshold).nonzero().flatten()
        if above.numel() > 0:
            keep = torch.ops.torchvision.nms(boxes[g][above], scores[g][above], iou_threshold)
            mask[g, above[keep]] = True
    return mask


_scripted: list[Any] = []


def grouped_nms_mask_torchvision(boxes: Tensor, scores: Tensor, iou_threshold: float, score_threshold: float) -> Tensor:
    """The mask of :func:`grouped_nms_mask` from ``torchvision.ops.nms``, one call per group, for TorchScript.

    A scripted loop over the groups (inside a traced graph it stays a loop, so any number of groups runs): one
    ``nms`` over all groups at once, separated by coordinate offsets, would cost the square of all the batch's
    candidates instead of the sum of each group's squares.
    """
    import torchvision  # noqa: F401  (registers torch.ops.torchvision.nms)

    if not _scripted:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit's deprecation notice
            _scripted.append(torch.jit.script(_nms_per_group))
    return _scripted[0](boxes, scores, float(iou_threshold), float(score_threshold))


def onnx_translation() -> dict[Any, Any]:
    """``custom_translation_table`` entry for ``torch.onnx.export(..., dynamo=True)`` (needs onnxscript)."""
    from onnxscript import opset18

    op: Any = opset18  # onnxscript's stubs type every value as a union of all tensor types

    def grouped_nms_mask_onnx(boxes: Any, scores: Any, iou_threshold: float, score_threshold: float) -> Any:
        # NonMaxSuppression: boxes [G, K, 4], scores [G, 1, K] -> selected [n, 3] rows (group, class 0, index);
        # boxes at or under the score threshold neither survive nor suppress (which side of it a box exactly on
        # the threshold falls does not change the mask: it could only suppress boxes under it)
        selected = op.NonMaxSuppression(boxes, op.Unsqueeze(scores, [1]), op.Constant(value_ints=[2**31 - 1]),
                                        op.Constant(value_floats=[iou_threshold]),
                                        op.Constant(value_floats=[score_threshold]))
        where = op.Gather(selected, op.Constant(value_ints=[0, 2]), axis=1)  # [n, 2]: (group, index)
        zeros = op.Cast(op.ConstantOfShape(op.Shape(scores)), to=9)  # bool [G, K], all False
        ones = op.Expand(op.Constant(value_int=1), op.Slice(op.Shape(selected), [0], [1]))
        return op.ScatterND(zeros, where, op.Cast(ones, to=9))

    return {torch.ops.cvkit.grouped_nms_mask.default: grouped_nms_mask_onnx}
