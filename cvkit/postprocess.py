"""Detector outputs -> detections in original-image pixels.

Glossary: B batch, A anchors, C foreground classes, K = max_detections. Logit 0 is background (see
``cvkit.models.detector``); output labels are the dataset's foreground labels ``0..C-1``.

Order of the steps, for the whole batch at once:

1. softmax over the C + 1 logits, drop the background column -> scores (B, A, C) (``score_activation``
   "softmax", SSD); or the sigmoid of each of the C logits ("sigmoid", the dense detector);
2. decode the deltas against the anchors (``cvkit.ops.BoxCoder``, weights of the loss) -> xyxy boxes in
   input-tensor pixels, clipped to each image's ``image_sizes`` (``0 <= x <= w``, ``0 <= y <= h``);
3. ``cvkit.ops.multiclass_nms`` (one call for the batch): per image and class, ``score > score_thresh``,
   the ``pre_nms_topk`` best, NMS at ``iou_thresh``; then the ``max_detections`` best over the classes,
   by decreasing score;
4. boxes scaled by ``orig_size / image_size`` per axis into original-image pixels and clipped to them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from cvkit.ops.coder import DEFAULT_WEIGHTS, BoxCoder
from cvkit.ops.nms import multiclass_nms

__all__ = ["PostprocessConfig", "DetectionPostprocessor", "GraphPostprocessor"]


@dataclass(frozen=True)
class PostprocessConfig:
    """The ``postprocess:`` section: raw outputs -> detections in original-image pixels."""

    score_thresh: float = 0.01  # keep (anchor, class) candidates with softmax score > score_thresh
    iou_thresh: float = 0.45  # NMS IoU threshold
    pre_nms_topk: int = 400  # candidates per image and class kept by score before NMS (<= 0: all)
    max_detections: int = 200  # detections per image after merging the classes
    class_agnostic: bool = False  # suppress across classes
    soft_nms: Literal["none", "linear", "gaussian"] = "none"  # hard NMS, or soft-NMS with linear / Gaussian decay
    soft_nms_sigma: float = 0.5  # Gaussian soft-NMS width


def _sizes(sizes: Tensor | Sequence[Sequence[int]], batch: int, device: torch.device, what: str) -> Tensor:
    out = torch.as_tensor(sizes, device=device).reshape(-1, 2).to(torch.float32)
    if out.shape[0] != batch:
        raise ValueError(f"{what} must have shape (B, 2) = ({batch}, 2), got {tuple(out.shape)}")
    return out


def _scores_and_boxes(cls_logits: Tensor, bbox_deltas: Tensor, anchors: Tensor, score_activation: str,
                      coder: BoxCoder, image_whwh: Tensor) -> tuple[Tensor, Tensor]:
    """Steps 1 and 2: scores ``(B, A, C)`` (sigmoid, or softmax with the background column dropped) and the
    decoded boxes ``(B, A, 4)`` clipped to ``0 <= x <= w``, ``0 <= y <= h`` (``image_whwh`` broadcasts)."""
    if score_activation == "sigmoid":
        scores = torch.sigmoid(cls_logits.float())
    else:
        scores = torch.softmax(cls_logits.float(), dim=-1)[..., 1:]  # (B, A, C + 1) -> (B, A, C)
    boxes = coder.decode(bbox_deltas.float(), anchors.float())
    return scores, torch.minimum(boxes.clamp(min=0), image_whwh)


class DetectionPostprocessor:
    """``postprocessor(outputs, image_sizes, orig_sizes) -> list`` of B dicts (see the module docstring).

    Args:
        cfg: the ``postprocess:`` section.
        box_weights: the BoxCoder weights the deltas were trained with.
        score_activation: "softmax" (C + 1 logits, background at 0) or "sigmoid" (C logits); the model's
            ``score_activation``.

    Call arguments: ``outputs`` the model's dict; ``image_sizes`` and ``orig_sizes`` int (B, 2) as
    ``(height, width)``: each image's size in the input tensor and in the original file. Returns per image
    ``{"boxes": float32 [n, 4] xyxy original pixels, "scores": float32 [n], "labels": int64 [n]}``,
    ``n <= max_detections``, sorted by decreasing score.
    """

    def __init__(self, cfg: PostprocessConfig | None = None, box_weights: Sequence[float] = DEFAULT_WEIGHTS,
                 score_activation: str = "softmax") -> None:
        if score_activation not in ("softmax", "sigmoid"):
            raise ValueError(f"score_activation must be 'softmax' or 'sigmoid', got {score_activation!r}")
        self.cfg = cfg or PostprocessConfig()
        self.coder = BoxCoder(box_weights)
        self.score_activation = score_activation

    def __repr__(self) -> str:
        return f"DetectionPostprocessor({self.cfg}, {self.coder}, score_activation={self.score_activation!r})"

    @torch.no_grad()
    def __call__(
        self,
        outputs: Mapping[str, Tensor],
        image_sizes: Tensor | Sequence[Sequence[int]],
        orig_sizes: Tensor | Sequence[Sequence[int]] | None = None,
    ) -> list[dict[str, Tensor]]:
        cls_logits = outputs["cls_logits"]
        batch = cls_logits.shape[0]
        device = cls_logits.device
        image_hw = _sizes(image_sizes, batch, device, "image_sizes")
        orig_hw = image_hw if orig_sizes is None else _sizes(orig_sizes, batch, device, "orig_sizes")
        image_whwh = image_hw.flip(-1).repeat(1, 2)[:, None, :]  # (B, 1, 4): (w, h, w, h)
        scores, boxes = _scores_and_boxes(cls_logits, outputs["bbox_deltas"], outputs["anchors"],
                                          self.score_activation, self.coder, image_whwh)
        cfg = self.cfg
        result = multiclass_nms(
            boxes,
            scores,
            score_thresh=cfg.score_thresh,
            iou_thresh=cfg.iou_thresh,
            pre_nms_topk=cfg.pre_nms_topk,
            max_detections=cfg.max_detections,
            class_agnostic=cfg.class_agnostic,
            soft_nms=None if cfg.soft_nms == "none" else cfg.soft_nms,
            sigma=cfg.soft_nms_sigma,
        )
        dets = result.detections  # (B, K, 6) rows (x1, y1, x2, y2, score, label)
        orig_whwh = orig_hw.flip(-1).repeat(1, 2)[:, None, :]  # (B, 1, 4)
        scaled = torch.minimum((dets[..., :4].float() * (orig_whwh / image_whwh)).clamp(min=0), orig_whwh)
        out = []
        for b, n in enumerate(result.num_detections.tolist()):
            out.append(
                {
                    "boxes": scaled[b, :n].contiguous(),
                    "scores": dets[b, :n, 4].float(),
                    "labels": dets[b, :n, 5].to(torch.int64),
                }
            )
        return out


class GraphPostprocessor(torch.nn.Module):
    """The postprocessor as graph operations, for exported models: fixed-shape outputs, hard NMS.

    ``forward(cls_logits, bbox_deltas, anchors) -> (boxes [B, D, 4], scores [B, D], labels [B, D], num [B])``:
    the steps 1-3 of :class:`DetectionPostprocessor` for images of the one input size ``(height, width)``, with
    the detections in input-tensor pixels (step 4, the scaling to each original image, is the caller's: one
    multiplication per axis). ``D = min(max_detections, candidates)``; rows past ``num[b]`` are padding (zero
    boxes and scores, label -1). The candidates are the ``pre_nms_topk`` best per image and class (per image
    with ``class_agnostic``) by score, then ``score > score_thresh``, NMS per image and class, and the D best
    over the classes, by decreasing score (equal scores: class, then rank). Same detections as
    :class:`DetectionPostprocessor` up to the order of exactly equal scores, which ``topk`` leaves open.

    ``nms``: "torchvision" (``torchvision.ops.nms``, for TorchScript) or "custom_op"
    (``torch.ops.cvkit.grouped_nms_mask``, which the ONNX exporter turns into ``NonMaxSuppression``).
    Soft-NMS has no graph form and is refused.
    """

    def __init__(self, cfg: PostprocessConfig, num_classes: int, num_anchors: int, image_size: Sequence[int],
                 box_weights: Sequence[float] = DEFAULT_WEIGHTS, score_activation: str = "softmax",
                 nms: str = "torchvision") -> None:
        super().__init__()
        if cfg.soft_nms != "none":
            raise ValueError(f"an exported postprocess does hard NMS only, the config asks for "
                             f"soft_nms={cfg.soft_nms!r}")
        if score_activation not in ("softmax", "sigmoid"):
            raise ValueError(f"score_activation must be 'softmax' or 'sigmoid', got {score_activation!r}")
        if nms not in ("torchvision", "custom_op"):
            raise ValueError(f"nms must be 'torchvision' or 'custom_op', got {nms!r}")
        self.cfg, self.nms, self.score_activation = cfg, nms, score_activation
        self.num_classes, self.coder = int(num_classes), BoxCoder(box_weights)
        height, width = (int(v) for v in image_size)
        self.register_buffer("image_whwh", torch.tensor([width, height, width, height], dtype=torch.float32))
        pool = num_anchors * num_classes if cfg.class_agnostic else num_anchors  # candidates per group
        self.topk = pool if cfg.pre_nms_topk <= 0 else min(cfg.pre_nms_topk, pool)
        groups = 1 if cfg.class_agnostic else num_classes
        self.max_detections = min(cfg.max_detections, groups * self.topk)

    image_whwh: Tensor  # buffer

    def _keep(self, boxes: Tensor, scores: Tensor) -> Tensor:
        if self.nms == "custom_op":
            import cvkit.ops.grouped_nms  # noqa: F401  (registers torch.ops.cvkit.grouped_nms_mask)

            return torch.ops.cvkit.grouped_nms_mask(boxes, scores, self.cfg.iou_thresh, self.cfg.score_thresh)
        from cvkit.ops.grouped_nms import grouped_nms_mask_torchvision

        return grouped_nms_mask_torchvision(boxes, scores, self.cfg.iou_thresh, self.cfg.score_thresh)

    def forward(self, cls_logits: Tensor, bbox_deltas: Tensor, anchors: Tensor
                ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        num_classes, k = self.num_classes, self.topk
        scores, boxes = _scores_and_boxes(cls_logits, bbox_deltas, anchors, self.score_activation, self.coder,
                                          self.image_whwh)  # (B, A, C), (B, A, 4) input pixels
        if self.cfg.class_agnostic:
            top_scores, top = scores.flatten(1).topk(k, dim=1)  # (B, K) over (anchor, class) pairs
            anchor, labels = top // num_classes, top % num_classes
            cand = torch.gather(boxes, 1, anchor[..., None].expand(-1, -1, 4))  # (B, K, 4)
            keep = self._keep(cand, top_scores)  # one group per image
            kept_scores = torch.where(keep, top_scores, torch.full_like(top_scores, -1.0))
        else:
            top_scores, top = scores.transpose(1, 2).topk(k, dim=2)  # (B, C, K)
            cand = torch.gather(boxes, 1, top.flatten(1)[..., None].expand(-1, -1, 4))  # (B, C * K, 4)
            groups = top_scores.reshape(-1, k)  # (B * C, K): one group per image and class
            keep = self._keep(cand.reshape(-1, k, 4), groups)
            kept_scores = torch.where(keep, groups, torch.full_like(groups, -1.0)).reshape(-1, num_classes * k)
            # class-major candidates: candidate i is of class i // K
            labels = (torch.arange(num_classes * k, device=scores.device) // k).expand_as(kept_scores)
        # only candidates with score > score_thresh can be kept: the others are -1
        return self._select(kept_scores, cand, labels)

    def _select(self, kept_scores: Tensor, cand: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        scores, index = kept_scores.topk(self.max_detections, dim=1)  # (B, D), decreasing
        valid = scores > self.cfg.score_thresh
        out_labels = torch.gather(labels, 1, index)
        boxes = torch.gather(cand, 1, index[..., None].expand(-1, -1, 4))
        boxes = torch.where(valid[..., None], boxes, torch.zeros_like(boxes))
        scores = torch.where(valid, scores, torch.zeros_like(scores))
        out_labels = torch.where(valid, out_labels, torch.full_like(out_labels, -1))
        return boxes, scores, out_labels, valid.sum(dim=1)
