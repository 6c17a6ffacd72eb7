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
from cvkit.ops.anchors import AnchorConfig, AnchorGenerator, AnchorGrid, DefaultBoxGenerator, multibox_prior  # noqa: E402
from cvkit.ops.assign import (  # noqa: E402
    BACKGROUND,
    IGNORE,
    AnchorMatch,
    MatcherConfig,
    assign_anchor_to_bbox,
    hard_negative_mining,
    match_anchors,
    multibox_target,
    pad_gt_boxes,
)
from cvkit.ops.coder import BoxCoder, decode_boxes, encode_boxes, multibox_detection  # noqa: E402

__all__ += [
    "AnchorConfig",
    "AnchorGenerator",
    "AnchorGrid",
    "DefaultBoxGenerator",
    "multibox_prior",
    "BACKGROUND",
    "IGNORE",
    "AnchorMatch",
    "MatcherConfig",
    "match_anchors",
    "pad_gt_boxes",
    "hard_negative_mining",
    "assign_anchor_to_bbox",
    "multibox_target",
    "BoxCoder",
    "encode_boxes",
    "decode_boxes",
    "multibox_detection",
]
