"""Affine maps of the geometric transforms the pipeline can fuse, and one-pass rendering of their composition.

A fusable transform moves every continuous point ``p = (x, y)`` (pixel edges at integers, cvkit's box
convention) by an affine map ``p' = M p`` that depends only on its sampled parameters:

=======================  =======================================  ===========================
transform                ``M`` (3x3, homogeneous)                  output (height, width)
=======================  =======================================  ===========================
``ZoomOut``              translate ``(left, top)``                  ``canvas``
``MinIoURandomCrop``     translate ``(-x0, -y0)``                   ``(y1 - y0, x1 - x0)``
``A.Resize``             scale ``(W' / W, H' / H)``                  ``(height, width)``
``A.HorizontalFlip``     ``x' = W - x``                             unchanged
=======================  =======================================  ===========================

:func:`render` resamples the source image once through the composed map instead of materializing each
intermediate image (the zoom-out canvas alone can be 16x the input): for the SSD order (zoom-out, crop,
resize, flip) it cuts the integer window of the source the output shows, pads only that window, resizes
it once and flips it, which gives exactly the pixels of the unfused steps. Other maps go through
``cv2.warpAffine`` (pixel centres at ``i + 0.5``: the index map handed to OpenCV is
``i_src = K (i_dst + 0.5) + t - 0.5`` for the inverse map ``p_src = K p_dst + t``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import albumentations as A
import cv2
import numpy as np

from cvkit.transforms.ssd import MinIoURandomCrop, ZoomOut

__all__ = ["affine_of", "render", "FUSABLE_INTERPOLATIONS"]

#: Interpolations cv2.warpAffine supports (INTER_AREA is not one: a Resize with it is not fused).
FUSABLE_INTERPOLATIONS = (cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_CUBIC)

AffineFn = Callable[[Any, dict[str, Any], tuple[int, int]], tuple[np.ndarray, tuple[int, int]]]


def _translate(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def _zoom_out(t: ZoomOut, params: dict[str, Any], size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    return _translate(params["left"], params["top"]), tuple(params["canvas"])


def _crop(t: MinIoURandomCrop, params: dict[str, Any], size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    x0, y0, x1, y1 = params["crop"]
    return _translate(-x0, -y0), (y1 - y0, x1 - x0)


def _resize(t: A.Resize, params: dict[str, Any], size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    height, width = size
    return np.diag([t.width / width, t.height / height, 1.0]), (t.height, t.width)


def _hflip(t: A.HorizontalFlip, params: dict[str, Any], size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    return np.array([[-1.0, 0.0, size[1]], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), size


_AFFINE: dict[type, AffineFn] = {
    ZoomOut: _zoom_out,
    MinIoURandomCrop: _crop,
    A.Resize: _resize,
    A.HorizontalFlip: _hflip,
}


def affine_of(t: Any) -> AffineFn | None:
    """The affine-map function of transform ``t`` if the pipeline can fuse it, else ``None``."""
    fn = _AFFINE.get(type(t))
    if fn is _resize and t.interpolation not in FUSABLE_INTERPOLATIONS:
        return None
    return fn


def _window(image: np.ndarray, x0: int, y0: int, x1: int, y1: int, fill: tuple[float, ...] | None) -> np.ndarray:
    """``image[y0:y1, x0:x1]`` where the window may reach outside the image (padded with ``fill`` or the edge)."""
    height, width = image.shape[:2]
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if (cx0, cy0, cx1, cy1) == (x0, y0, x1, y1):
        return image[y0:y1, x0:x1]  # a view: no copy
    if cx0 >= cx1 or cy0 >= cy1:  # entirely outside: a window of fill
        value = fill if fill is not None else (0,) * image.shape[2]
        return np.full((y1 - y0, x1 - x0, image.shape[2]), value[: image.shape[2]], dtype=image.dtype)
    border = cv2.BORDER_CONSTANT if fill is not None else cv2.BORDER_REPLICATE
    value = tuple(float(v) for v in fill[: image.shape[2]]) if fill is not None else 0
    pads = (cy0 - y0, y1 - cy1, cx0 - x0, x1 - cx1)
    return cv2.copyMakeBorder(image[cy0:cy1, cx0:cx1], *pads, border, value=value)


def render(
    image: np.ndarray,
    matrix: np.ndarray,
    size: tuple[int, int],
    interpolation: int = cv2.INTER_LINEAR,
    fill: tuple[float, ...] | None = None,
) -> np.ndarray:
    """Resample ``image`` through the forward map ``matrix`` (3x3) into an image of ``size = (h, w)``.

    Points outside the source take ``fill`` (when given: the zoom-out canvas colour) or the nearest edge
    pixel (``fill=None``). When the map is "integer window -> resize -> optional horizontal flip" (the
    ``ssd_train`` case) this is exactly what the unfused steps produce: the window is cut (and padded
    where it leaves the image), resized with ``cv2.resize`` and flipped; other maps use ``cv2.warpAffine``.
    """
    height, width = size
    (sx, kxy, tx), (kyx, sy, ty) = matrix[0].tolist(), matrix[1].tolist()
    if kxy == 0 and kyx == 0 and sx != 0 and sy > 0:  # axis-aligned: the source window the output shows
        xa, xb = sorted(((0.0 - tx) / sx, (width - tx) / sx))
        ya, yb = (0.0 - ty) / sy, (height - ty) / sy
        window = (xa, ya, xb, yb)
        if all(abs(v - round(v)) < 1e-6 for v in window):
            x0, y0, x1, y1 = (round(v) for v in window)
            out = _window(image, x0, y0, x1, y1, fill)
            if out.shape[:2] != (height, width):
                out = cv2.resize(out, (width, height), interpolation=interpolation)
            if sx < 0:
                out = cv2.flip(out, 1)
            return out
    inverse = np.linalg.inv(matrix)
    linear, shift = inverse[:2, :2], inverse[:2, 2]
    index_map = np.concatenate([linear, (linear @ [0.5, 0.5] + shift - 0.5)[:, None]], axis=1)
    border = cv2.BORDER_REPLICATE if fill is None else cv2.BORDER_CONSTANT
    border_value = (0.0,) if fill is None else tuple(float(v) for v in fill)
    return cv2.warpAffine(
        image, index_map, (width, height), flags=interpolation | cv2.WARP_INVERSE_MAP, borderMode=border,
        borderValue=border_value,
    )  # fmt: skip
