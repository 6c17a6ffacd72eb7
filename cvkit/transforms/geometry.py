"""Axis-aligned maps of the geometric transforms the pipeline can fuse, and one-pass rendering.

A fusable transform moves every continuous point ``(x, y)`` (pixel edges at integers, cvkit's box
convention) by an axis-aligned affine map ``x' = ax * x + bx``, ``y' = ay * y + by`` that depends only on
its sampled parameters (an :class:`AxisMap`):

=======================  ==========================================  ===========================
transform                map                                          output (height, width)
=======================  ==========================================  ===========================
``ZoomOut``              ``x' = x + left``, ``y' = y + top``          ``canvas``
``MinIoURandomCrop``     ``x' = x - x0``, ``y' = y - y0``             ``(y1 - y0, x1 - x0)``
``A.Resize``             ``x' = x * W' / W``, ``y' = y * H' / H``     ``(height, width)``
``A.HorizontalFlip``     ``x' = W - x``                               unchanged
=======================  ==========================================  ===========================

:func:`render` resamples the source image once through the composed map instead of materializing each
intermediate image (the zoom-out canvas alone can be 16x the input). The maps of these transforms keep
integer windows integer, so the output always shows an integer window of the (virtual) zoom-out canvas:
its part inside the image is sliced, the canvas margins it shows are added around it with one
``cv2.copyMakeBorder``, and the result is resized once and flipped -- exactly the pixels of the unfused
steps, without the rest of the canvas. A window with fractional edges (a map from elsewhere) goes
through one ``cv2.warpAffine`` (pixel centres at ``i + 0.5``: the index map handed to OpenCV is
``i_src = a (i_dst + 0.5) + b - 0.5`` for the inverse map ``x_src = a x_dst + b``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import albumentations as A
import cv2
import numpy as np

from cvkit.transforms.ssd import MinIoURandomCrop, ZoomOut

__all__ = ["AxisMap", "IDENTITY", "map_of", "render", "FUSABLE_INTERPOLATIONS"]

#: Interpolations cv2.warpAffine supports (INTER_AREA is not one: a Resize with it is not fused).
FUSABLE_INTERPOLATIONS = (cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_CUBIC)


class AxisMap(NamedTuple):
    """``x' = ax * x + bx``, ``y' = ay * y + by`` (``ay > 0``; ``ax < 0`` mirrors)."""

    ax: float
    bx: float
    ay: float
    by: float

    def then(self, other: AxisMap) -> AxisMap:
        """The map ``other(self(p))``."""
        return AxisMap(
            other.ax * self.ax, other.ax * self.bx + other.bx, other.ay * self.ay, other.ay * self.by + other.by
        )


IDENTITY = AxisMap(1.0, 0.0, 1.0, 0.0)
MapFn = Callable[[Any, dict[str, Any], tuple[int, int]], tuple[AxisMap, tuple[int, int]]]


def _zoom_out(t: ZoomOut, params: dict[str, Any], size: tuple[int, int]) -> tuple[AxisMap, tuple[int, int]]:
    canvas_h, canvas_w = params["canvas"]
    return AxisMap(1.0, float(params["left"]), 1.0, float(params["top"])), (canvas_h, canvas_w)


def _crop(t: MinIoURandomCrop, params: dict[str, Any], size: tuple[int, int]) -> tuple[AxisMap, tuple[int, int]]:
    x0, y0, x1, y1 = params["crop"]
    return AxisMap(1.0, float(-x0), 1.0, float(-y0)), (y1 - y0, x1 - x0)


def _resize(t: A.Resize, params: dict[str, Any], size: tuple[int, int]) -> tuple[AxisMap, tuple[int, int]]:
    height, width = size
    return AxisMap(t.width / width, 0.0, t.height / height, 0.0), (t.height, t.width)


def _hflip(t: A.HorizontalFlip, params: dict[str, Any], size: tuple[int, int]) -> tuple[AxisMap, tuple[int, int]]:
    return AxisMap(-1.0, float(size[1]), 1.0, 0.0), size


_MAPS: dict[type, MapFn] = {ZoomOut: _zoom_out, MinIoURandomCrop: _crop, A.Resize: _resize, A.HorizontalFlip: _hflip}


def map_of(t: Any) -> MapFn | None:
    """The map function of transform ``t`` if the pipeline can fuse it, else ``None``."""
    fn = _MAPS.get(type(t))
    if fn is _resize and t.interpolation not in FUSABLE_INTERPOLATIONS:
        return None
    return fn


def render(
    image: np.ndarray,
    amap: AxisMap,
    size: tuple[int, int],
    interpolation: int = cv2.INTER_LINEAR,
    fill: tuple[float, ...] | None = None,
) -> np.ndarray:
    """Resample ``image`` through the forward map ``amap`` into an image of ``size = (h, w)``.

    Output pixel centres ``p + 0.5`` sample the source at ``amap^-1 (p + 0.5)``; points outside the
    source take ``fill`` (when given: the zoom-out canvas colour) or the nearest edge pixel (``fill=None``).

    - The output shows an integer window (every map of :data:`_MAPS`): its part inside the source is
      sliced (no copy), the margins outside get ``fill`` (``cv2.copyMakeBorder``), and the result is
      resized with ``cv2.resize`` and flipped if mirrored -- the very pixels the unfused steps produce.
    - Otherwise: one ``cv2.warpAffine``, whose cost depends on the output size only. Its bilinear weights
      differ from ``cv2.resize``'s by at most one grey level.
    """
    height, width = size
    src_h, src_w = image.shape[:2]
    ax, bx, ay, by = amap
    # the source window the output shows: inverse map of [0, width] x [0, height]
    xa, xb = sorted(((0.0 - bx) / ax, (width - bx) / ax))
    ya, yb = (0.0 - by) / ay, (height - by) / ay
    window = (xa, ya, xb, yb)
    if all(abs(v - round(v)) < 1e-6 for v in window):
        x0, y0, x1, y1 = (round(v) for v in window)
        # the part of the window inside the source, and the canvas margins around it
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, src_w), min(y1, src_h)
        if cx0 >= cx1 or cy0 >= cy1:  # the window shows no source pixel
            if fill is None:
                raise ValueError("render: the window lies outside the image and there is no fill colour")
            return np.full((height, width) + image.shape[2:], fill[: image.shape[2]] if image.ndim == 3 else fill[0],
                           dtype=image.dtype)  # fmt: skip
        out = image[cy0:cy1, cx0:cx1]
        margins = (cy0 - y0, y1 - cy1, cx0 - x0, x1 - cx1)
        if any(margins):
            border = cv2.BORDER_REPLICATE if fill is None else cv2.BORDER_CONSTANT
            value = 0.0 if fill is None else (fill[: image.shape[2]] if image.ndim == 3 else fill[0])
            out = cv2.copyMakeBorder(out, *margins, border, value=value)
        if out.shape[:2] != (height, width):
            out = cv2.resize(out, (width, height), interpolation=interpolation)
        if ax < 0:
            out = cv2.flip(out, 1)
        return out
    inv_ax, inv_ay = 1.0 / ax, 1.0 / ay
    index_map = np.array(
        [[inv_ax, 0.0, 0.5 * inv_ax - bx * inv_ax - 0.5], [0.0, inv_ay, 0.5 * inv_ay - by * inv_ay - 0.5]]
    )
    border = cv2.BORDER_REPLICATE if fill is None else cv2.BORDER_CONSTANT
    border_value = (0.0,) if fill is None else tuple(float(v) for v in fill)
    return cv2.warpAffine(
        image, index_map, (width, height), flags=interpolation | cv2.WARP_INVERSE_MAP, borderMode=border,
        borderValue=border_value,
    )  # fmt: skip
