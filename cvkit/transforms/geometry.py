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
integer windows integer, so the output shows an integer window of the (virtual) zoom-out canvas:

- a window inside the image (no zoom-out, or a crop inside the image) is sliced, resized once and flipped:
  exactly the pixels of the unfused steps;
- a window showing the canvas is either padded with the fill colour around its image part
  (``cv2.copyMakeBorder``) and resized and flipped -- again exactly the unfused pixels -- or, when that
  would cost more (a large window that is mostly canvas), the output is the fill colour except the
  image's footprint, computed by one ``cv2.warpAffine`` of the footprint alone. The warp's bilinear
  weights differ from ``cv2.resize``'s by at most one grey level, and at the window's edges it reads the
  canvas beyond them where the resize repeats the edge pixel;
- a window with fractional edges (a map from elsewhere) goes through one ``cv2.warpAffine``.

Pixel centres sit at ``i + 0.5``: the index map handed to OpenCV is ``i_src = a (i_dst + 0.5) + b - 0.5``
for the inverse map ``x_src = a x_dst + b``.
"""

from __future__ import annotations

import math
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
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Resample ``image`` through the forward map ``amap`` into an image of ``size = (h, w)``.

    Output pixel centres ``p + 0.5`` sample the source at ``amap^-1 (p + 0.5)``; points outside the
    source take ``fill`` (when given: the zoom-out canvas colour) or the nearest edge pixel (``fill=None``).
    With ``out`` (an array of the output's shape and ``image``'s dtype, e.g. a slot of a batch buffer) the
    pixels are written there and ``out`` is returned; the values are the same.

    - The output shows an integer window (every map of :data:`_MAPS`): its part inside the source is
      sliced (no copy), the margins outside get ``fill`` (``cv2.copyMakeBorder``), and the result is
      resized with ``cv2.resize`` and flipped if mirrored -- the very pixels the unfused steps produce;
      unless the window is mostly canvas, where warping only the image's footprint is cheaper
      (:func:`_warp_footprint`, within one grey level).
    - Otherwise: one ``cv2.warpAffine``, whose cost depends on the output size only. Its bilinear weights
      differ from ``cv2.resize``'s by at most one grey level.
    """
    height, width = size
    src_h, src_w = image.shape[:2]
    if out is not None and (out.shape != (height, width) + image.shape[2:] or out.dtype != image.dtype):
        raise ValueError(f"render: out has shape {out.shape} and dtype {out.dtype}, the output needs "
                         f"{(height, width) + image.shape[2:]} and {image.dtype}")
    ax, bx, ay, by = amap
    # the source window the output shows: inverse map of [0, width] x [0, height]
    xa, xb = -bx / ax, (width - bx) / ax
    if xa > xb:
        xa, xb = xb, xa
    ya, yb = -by / ay, (height - by) / ay
    x0, y0, x1, y1 = round(xa), round(ya), round(xb), round(yb)
    if abs(xa - x0) < 1e-6 and abs(ya - y0) < 1e-6 and abs(xb - x1) < 1e-6 and abs(yb - y1) < 1e-6:
        # the part of the window inside the source, and the canvas margins around it
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, src_w), min(y1, src_h)
        if cx0 >= cx1 or cy0 >= cy1:  # the window shows no source pixel
            if fill is None:
                raise ValueError("render: the window lies outside the image and there is no fill colour")
            if out is None:
                out = np.empty((height, width) + image.shape[2:], dtype=image.dtype)
            _fill(out, _fill_pixel(image, fill))
            return out
        window = image[cy0:cy1, cx0:cx1]
        margins = (cy0 - y0, y1 - cy1, cx0 - x0, x1 - cx1)
        if any(margins) and fill is not None:
            # the canvas shows: padding the window and resizing it costs about its area plus a resize;
            # warping only the part of the output the image covers costs about 12x that part (OpenCV
            # per-pixel costs measured on one core). Take the cheaper.
            shown = (cx1 - cx0) * (cy1 - cy0) * (width * height) / ((x1 - x0) * (y1 - y0))
            if 12.0 * shown < (x1 - x0) * (y1 - y0) + 6.0 * width * height:
                return _warp_footprint(image, amap, size, interpolation, fill, out)
        if any(margins):
            border = cv2.BORDER_REPLICATE if fill is None else cv2.BORDER_CONSTANT
            value = 0.0 if fill is None else _fill_value(image, fill)
            window = cv2.copyMakeBorder(window, *margins, border, value=value)
        if window.shape[:2] != (height, width):
            resized = cv2.resize(window, (width, height), dst=out, interpolation=interpolation)
            # OpenCV flips in place (pairs of columns swapped): no second output buffer
            return cv2.flip(resized, 1, dst=resized) if ax < 0 else resized
        if ax < 0:
            return cv2.flip(window, 1, dst=out)
        if out is not None:
            np.copyto(out, window)
            return out
        return window
    return _warp(image, amap, size, interpolation, fill, out)


def _index_map(amap: AxisMap) -> np.ndarray:
    """OpenCV's inverse index map for the forward map ``amap``: ``i_src = a (i_dst + 0.5) + b - 0.5``."""
    ax, bx, ay, by = amap
    inv_ax, inv_ay = 1.0 / ax, 1.0 / ay
    return np.array([[inv_ax, 0.0, 0.5 * inv_ax - bx * inv_ax - 0.5], [0.0, inv_ay, 0.5 * inv_ay - by * inv_ay - 0.5]])


def _fill_value(image: np.ndarray, fill: tuple[float, ...]) -> Any:
    return fill[: image.shape[2]] if image.ndim == 3 else fill[0]


def _fill_pixel(image: np.ndarray, fill: tuple[float, ...]) -> np.ndarray:
    """The fill colour as one pixel of ``image``'s dtype, converted as OpenCV's border value is (rounded and
    saturated for integer images)."""
    value = np.asarray(_fill_value(image, fill), dtype=np.float64)
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        value = np.clip(np.rint(value), info.min, info.max)
    return value.astype(image.dtype)


def _fill(region: np.ndarray, pixel: np.ndarray) -> None:
    """Set every pixel of ``region`` (a view) to ``pixel``: rows are copied from one filled row (numpy's
    broadcast of a single pixel walks the channels one by one, far slower: ``benchmarks/bench_data.py``)."""
    if region.size == 0:
        return
    if region.ndim == 3:
        row = np.empty(region.shape[1:], dtype=region.dtype)
        row[...] = pixel
        region[...] = row
    else:
        region[...] = pixel


def _warp_footprint(
    image: np.ndarray,
    amap: AxisMap,
    size: tuple[int, int],
    interpolation: int,
    fill: tuple[float, ...],
    out: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`_warp` computed only where the output sees the image (its footprint plus the filter's reach),
    straight into its place in the output; the rest of the output is ``fill``."""
    height, width = size
    src_h, src_w = image.shape[:2]
    index_map = _index_map(amap)
    reach = 2.0  # bilinear reads 1 pixel around the sample point, bicubic 2
    # output columns / rows whose sample point i * a + b lies within ``reach`` of the source's pixel centres
    c0, c1 = _reaching(index_map[0, 0], index_map[0, 2], src_w, reach, width)
    r0, r1 = _reaching(index_map[1, 1], index_map[1, 2], src_h, reach, height)
    if out is None:
        out = np.empty((height, width) + image.shape[2:], dtype=image.dtype)
    pixel = _fill_pixel(image, fill)
    if c0 >= c1 or r0 >= r1:
        _fill(out, pixel)
        return out
    for region in (out[:r0], out[r1:], out[r0:r1, :c0], out[r0:r1, c1:]):
        _fill(region, pixel)
    index_map[0, 2] += index_map[0, 0] * c0
    index_map[1, 2] += index_map[1, 1] * r0
    cv2.warpAffine(
        image, index_map, (c1 - c0, r1 - r0), dst=out[r0:r1, c0:c1], flags=interpolation | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT, borderValue=tuple(float(v) for v in fill),
    )
    return out


def _reaching(a: float, b: float, size: int, reach: float, count: int) -> tuple[int, int]:
    """The range ``[lo, hi)`` of ``i`` in ``[0, count)`` with ``-reach < i * a + b < size - 1 + reach``."""
    lo_bound, hi_bound = (-reach - b) / a, (size - 1 + reach - b) / a
    if a < 0:
        lo_bound, hi_bound = hi_bound, lo_bound
    lo = max(0, math.floor(lo_bound) + 1)  # strictly inside the open interval
    hi = min(count, math.ceil(hi_bound))
    return lo, max(lo, hi)


def _warp(
    image: np.ndarray,
    amap: AxisMap,
    size: tuple[int, int],
    interpolation: int,
    fill: tuple[float, ...] | None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    height, width = size
    index_map = _index_map(amap)
    border = cv2.BORDER_REPLICATE if fill is None else cv2.BORDER_CONSTANT
    border_value = (0.0,) if fill is None else tuple(float(v) for v in fill)
    return cv2.warpAffine(
        image, index_map, (width, height), dst=out, flags=interpolation | cv2.WARP_INVERSE_MAP, borderMode=border,
        borderValue=border_value,
    )
