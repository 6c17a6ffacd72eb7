"""numba kernel of the SSD min-IoU crop search (the rule is in :mod:`cvkit.transforms.ssd`).

All random numbers are drawn beforehand (``uniforms [R, T, 4]``, ``min_ious [R]``); the kernel walks the
rounds and windows in order and stops at the first success, so the result is a pure function of the draws.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["find_crop_window"]


@numba.njit(cache=True, nogil=True)
def find_crop_window(
    uniforms: np.ndarray,
    min_ious: np.ndarray,
    boxes: np.ndarray,
    width: int,
    height: int,
    min_scale: float,
    max_aspect: float,
) -> tuple[int, int, int, int, int]:
    """First accepted window ``(status, x0, y0, x1, y1)``: status 1 = window, 0 = keep whole image, -1 = none.

    ``uniforms[r, t] = (u_w, u_h, u_x, u_y)``: side ``max(1, int((min_scale + (1 - min_scale) * u) * size))``,
    offset ``int(u * (size - side + 1))``; a window whose aspect ratio exceeds ``max_aspect`` is skipped.
    ``boxes [N, 4]`` are xyxy pixels; with ``N == 0`` the first window of an IoU round is accepted.
    """
    num_rounds, num_trials = uniforms.shape[0], uniforms.shape[1]
    num_boxes = boxes.shape[0]
    for r in range(num_rounds):
        min_iou = min_ious[r]
        if min_iou >= 1.0:
            return 0, 0, 0, width, height
        for t in range(num_trials):
            crop_w = max(1, int((min_scale + (1.0 - min_scale) * uniforms[r, t, 0]) * width))
            crop_h = max(1, int((min_scale + (1.0 - min_scale) * uniforms[r, t, 1]) * height))
            if crop_h > max_aspect * crop_w or crop_w > max_aspect * crop_h:
                continue
            x0 = int(uniforms[r, t, 2] * (width - crop_w + 1))
            y0 = int(uniforms[r, t, 3] * (height - crop_h + 1))
            x1, y1 = x0 + crop_w, y0 + crop_h
            if num_boxes == 0:
                return 1, x0, y0, x1, y1
            window_area = float(crop_w * crop_h)
            for n in range(num_boxes):
                bx1, by1, bx2, by2 = boxes[n, 0], boxes[n, 1], boxes[n, 2], boxes[n, 3]
                cx, cy = (bx1 + bx2) / 2, (by1 + by2) / 2
                if not (x0 < cx < x1 and y0 < cy < y1):
                    continue
                inter_w = min(x1, bx2) - max(x0, bx1)
                inter_h = min(y1, by2) - max(y0, by1)
                if inter_w <= 0 or inter_h <= 0:
                    continue
                inter = inter_w * inter_h
                union = window_area + (bx2 - bx1) * (by2 - by1) - inter
                if union > 0 and inter / union >= min_iou:
                    return 1, x0, y0, x1, y1
    return -1, 0, 0, width, height
