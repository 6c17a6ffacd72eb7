"""numba kernels of the augmentation pipeline: the SSD min-IoU crop search and the per-step box filter.

Both replace a dozen numpy calls on arrays of a few boxes, where numpy's per-call cost dominated.
The crop search gets its random numbers drawn beforehand (``uniforms [R, T, 4]``, ``min_ious [R]``); it
walks the rounds and windows in order and stops at the first success, so the result is a pure function
of the draws (the rule is in :mod:`cvkit.transforms.ssd`).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["find_crop_window", "filter_boxes", "crop_boxes", "rows_from_boxes", "boxes_from_rows", "shift_scale_rows",
           "photometric_affine"]


@numba.njit(cache=True, nogil=True)
def find_crop_window(
    uniforms: np.ndarray,
    min_ious: np.ndarray,
    boxes: np.ndarray,
    width: int,
    height: int,
    min_scale: float,
    max_aspect: float,
    box_scale_x: float = 1.0,
    box_scale_y: float = 1.0,
) -> tuple[int, int, int, int, int]:
    """First accepted window ``(status, x0, y0, x1, y1)``: status 1 = window, 0 = keep whole image, -1 = none.

    ``uniforms[r, t] = (u_w, u_h, u_x, u_y)``: side ``max(1, int((min_scale + (1 - min_scale) * u) * size))``,
    offset ``int(u * (size - side + 1))``; a window whose aspect ratio exceeds ``max_aspect`` is skipped.
    ``boxes [N, >= 4]`` are xyxy, in pixels once x is multiplied by ``box_scale_x`` and y by ``box_scale_y``
    (normalized rows pass the image size); with ``N == 0`` the first window of an IoU round is accepted.
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
                bx1, by1 = boxes[n, 0] * box_scale_x, boxes[n, 1] * box_scale_y
                bx2, by2 = boxes[n, 2] * box_scale_x, boxes[n, 3] * box_scale_y
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


@numba.njit(cache=True, nogil=True)
def filter_boxes(
    rows: np.ndarray, width: int, height: int, min_size: float, min_visibility: float
) -> tuple[np.ndarray, int]:
    """Clip normalized ``rows [N, 4 + k]`` (x1, y1, x2, y2 in [0, 1] units, then extra columns) to the
    image, then keep a row when its clipped width and height in pixels are > 0 and >= ``min_size`` and its
    clipped area is >= ``min_visibility`` of its area before clipping.

    Returns ``(kept rows [K, 4 + k] with clipped coordinates, number of kept rows that were clipped)``.
    """
    n, cols = rows.shape
    out = np.empty((n, cols), dtype=rows.dtype)
    kept = 0
    clipped_kept = 0
    for i in range(n):
        x1, y1, x2, y2 = rows[i, 0], rows[i, 1], rows[i, 2], rows[i, 3]
        cx1, cy1 = min(max(x1, 0.0), 1.0), min(max(y1, 0.0), 1.0)
        cx2, cy2 = min(max(x2, 0.0), 1.0), min(max(y2, 0.0), 1.0)
        w_px, h_px = (cx2 - cx1) * width, (cy2 - cy1) * height
        if not (w_px > 0 and h_px > 0 and w_px >= min_size and h_px >= min_size):
            continue
        was_clipped = cx1 != x1 or cy1 != y1 or cx2 != x2 or cy2 != y2
        if was_clipped and min_visibility > 0:
            full = max(x2 - x1, 0.0) * max(y2 - y1, 0.0)
            if (cx2 - cx1) * (cy2 - cy1) < min_visibility * full:
                continue
        out[kept, 0], out[kept, 1], out[kept, 2], out[kept, 3] = cx1, cy1, cx2, cy2
        for c in range(4, cols):
            out[kept, c] = rows[i, c]
        kept += 1
        clipped_kept += was_clipped
    return out[:kept], clipped_kept


@numba.njit(cache=True, nogil=True)
def crop_boxes(rows: np.ndarray, width: int, height: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """Rows ``[N, 4 + k]`` (normalized to ``width x height``) whose box centre lies strictly inside the
    window ``(x0, y0, x1, y1)``, moved into the window's normalized coordinates (not clipped)."""
    n, cols = rows.shape
    out = np.empty((n, cols), dtype=rows.dtype)
    crop_w, crop_h = x1 - x0, y1 - y0
    kept = 0
    for i in range(n):
        bx1, by1 = rows[i, 0] * width, rows[i, 1] * height
        bx2, by2 = rows[i, 2] * width, rows[i, 3] * height
        cx, cy = (bx1 + bx2) / 2, (by1 + by2) / 2
        if not (x0 < cx < x1 and y0 < cy < y1):
            continue
        out[kept, 0] = (bx1 - x0) / crop_w
        out[kept, 1] = (by1 - y0) / crop_h
        out[kept, 2] = (bx2 - x0) / crop_w
        out[kept, 3] = (by2 - y0) / crop_h
        for c in range(4, cols):
            out[kept, c] = rows[i, c]
        kept += 1
    return out[:kept]


@numba.njit(cache=True, nogil=True)
def rows_from_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """xyxy pixel ``boxes [N, 4]`` -> rows ``[N, 5]``: coordinates normalized to [0, 1] units, then the row number."""
    n = boxes.shape[0]
    rows = np.empty((n, 5), dtype=np.float64)
    for i in range(n):
        rows[i, 0] = boxes[i, 0] / width
        rows[i, 1] = boxes[i, 1] / height
        rows[i, 2] = boxes[i, 2] / width
        rows[i, 3] = boxes[i, 3] / height
        rows[i, 4] = i
    return rows


@numba.njit(cache=True, nogil=True)
def boxes_from_rows(rows: np.ndarray, width: int, height: int, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``[K, 5]`` -> (float32 xyxy pixel boxes ``[K, 4]``, ``labels`` of each row's original number)."""
    k = rows.shape[0]
    boxes = np.empty((k, 4), dtype=np.float32)
    out_labels = np.empty(k, dtype=np.int64)
    for i in range(k):
        boxes[i, 0] = rows[i, 0] * width
        boxes[i, 1] = rows[i, 1] * height
        boxes[i, 2] = rows[i, 2] * width
        boxes[i, 3] = rows[i, 3] * height
        out_labels[i] = labels[int(rows[i, 4])]
    return boxes, out_labels


@numba.njit(cache=True, nogil=True)
def shift_scale_rows(rows: np.ndarray, sx: float, bx: float, sy: float, by: float) -> np.ndarray:
    """A copy of ``rows [N, 4 + k]`` with ``x -> x * sx + bx`` and ``y -> y * sy + by`` (extra columns kept)."""
    out = rows.copy()
    for i in range(rows.shape[0]):
        out[i, 0] = rows[i, 0] * sx + bx
        out[i, 1] = rows[i, 1] * sy + by
        out[i, 2] = rows[i, 2] * sx + bx
        out[i, 3] = rows[i, 3] * sy + by
    return out


#: luma weights for grey (contrast and saturation), as in torchvision's ``rgb_to_grayscale``; RGB <-> YIQ
GREY_WEIGHTS = np.array([0.299, 0.587, 0.114])
RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
YIQ_TO_RGB = np.linalg.inv(RGB_TO_YIQ)


@numba.njit(cache=True, nogil=True)
def _matmul3(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            for k in range(3):
                out[i, j] += a[i, k] * b[k, j]
    return out


@numba.njit(cache=True, nogil=True)
def photometric_affine(
    grey_mean: float, brightness: float, contrast: float, saturation: float, hue: float, p0: int, p1: int, p2: int
) -> np.ndarray:
    """float32 3x4 ``[A | b]``: the same map as :func:`cvkit.transforms.ssd.photometric_matrix` (see there)."""
    linear = np.empty((3, 3))
    for i in range(3):
        for j in range(3):
            linear[i, j] = (1.0 - saturation) * GREY_WEIGHTS[j] + (saturation if i == j else 0.0)
    if hue != 0.0:
        angle = -2.0 * np.pi * hue
        c, s = np.cos(angle), np.sin(angle)
        rotation = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
        linear = _matmul3(YIQ_TO_RGB, _matmul3(rotation, _matmul3(RGB_TO_YIQ, linear)))
    out = np.empty((3, 4), dtype=np.float32)
    perm = (p0, p1, p2)
    shift = (1.0 - contrast) * brightness * grey_mean
    for r in range(3):
        src = perm[r]
        for j in range(3):
            out[r, j] = (contrast * brightness) * linear[src, j]
        out[r, 3] = shift
    return out
