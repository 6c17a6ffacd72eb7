"""Box, IoU and NMS operators: the part of cvkit users import directly.

Boxes are ``(x1, y1, x2, y2)`` in absolute pixels unless a function takes a format.
"""

from cvkit.ops.boxes import (
    box_area,
    box_convert,
    box_iou,
    clip_boxes_to_image,
    complete_box_iou,
    distance_box_iou,
    generalized_box_iou,
    remove_small_boxes,
)
from cvkit.ops.nms import MulticlassNMSResult, batched_nms, multiclass_nms, nms

__all__ = [
    "box_area",
    "box_convert",
    "box_iou",
    "clip_boxes_to_image",
    "complete_box_iou",
    "distance_box_iou",
    "generalized_box_iou",
    "remove_small_boxes",
    "nms",
    "batched_nms",
    "multiclass_nms",
    "MulticlassNMSResult",
]

# --- anchors, matching and box coding (issue 3) ---
