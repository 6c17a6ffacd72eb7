"""The SSD augmentations albumentations lacks, written as albumentations transforms.

Each samples its parameters first (``get_params`` / ``get_params_dependent_on_data``) and then applies one
deterministic operation to the image and, for the dual transforms, to the boxes. Boxes arrive and leave in
albumentations' internal format: ``[N, 4 + k]`` with normalized ``(x1, y1, x2, y2)`` in ``[0, 1]`` of the
current image followed by ``k`` extra columns carried along untouched (cvkit carries a row id there).

- :class:`PhotometricDistort` (image only): brightness, contrast, saturation, hue and a channel
  permutation, each with probability ``p_each``, fused into one affine colour map ``y = A x + b`` applied
  with a single ``cv2.transform``.
- :class:`ZoomOut` (dual): places the image at a random position on a canvas ``r`` times larger
  (``r ~ U(1, max_ratio)``) filled with ``fill``: ``x' = (x * W + left) / W'``.
- :class:`MinIoURandomCrop` (dual): the SSD crop. Pick a minimum IoU from ``min_ious`` (a value >= 1 keeps
  the whole image); draw ``trials`` windows with sides in ``[min_scale, 1]`` of the image's and aspect
  ratio within ``max_aspect``; accept the first window that contains the centre of at least one box and
  whose IoU with at least one of those boxes is >= the minimum (any window when there are no boxes). Keep
  the boxes whose centre lies strictly inside the window, in window coordinates (clipping and size
  filtering are the pipeline's job). If ``max_rounds`` choices find no window, keep the whole image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np

from cvkit.transforms._kernels import (
    GREY_WEIGHTS,
    PHOTOMETRIC_DRAWS,
    RGB_TO_YIQ,
    YIQ_TO_RGB,
    ZOOM_OUT_DRAWS,
    crop_boxes,
    photometric_affine,
    photometric_params,
    search_crop_window,
    shift_scale_rows,
    zoom_out_params,
)

__all__ = ["PhotometricDistort", "ZoomOut", "MinIoURandomCrop", "photometric_matrix", "hue_matrix", "GREY_WEIGHTS"]

_GREY_R, _GREY_G, _GREY_B = (float(w) for w in GREY_WEIGHTS)
_EYE = np.eye(3)
_ONES_GREY = np.outer(np.ones(3), GREY_WEIGHTS)  # x -> g(x) in every channel


def hue_matrix(turns: float) -> np.ndarray:
    """3x3 RGB matrix rotating hue by ``turns`` of a full turn about the grey axis (a YIQ rotation).

    It keeps grey pixels and luma (``GREY_WEIGHTS @ M == GREY_WEIGHTS``) and approximates an HSV hue shift
    by ``turns * 360`` degrees (red moves towards yellow for positive ``turns``).
    """
    angle = -2.0 * math.pi * turns
    c, s = math.cos(angle), math.sin(angle)
    rotation = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    return YIQ_TO_RGB @ rotation @ RGB_TO_YIQ


def photometric_matrix(
    grey_mean: float,
    brightness: float = 1.0,
    contrast: float = 1.0,
    saturation: float = 1.0,
    hue: float = 0.0,
    permutation: Sequence[int] = (0, 1, 2),
) -> np.ndarray:
    """The 3x4 affine colour map ``[A | b]`` of the photometric steps on an image whose grey mean is ``grey_mean``.

    Steps (RGB column vectors ``x``): brightness ``x -> f x``; contrast ``x -> f x + (1 - f) m`` with ``m``
    the image's mean grey at that point (``brightness * grey_mean``); saturation ``x -> f x + (1 - f) g(x)``
    with ``g(x) = GREY_WEIGHTS @ x``; hue ``x -> hue_matrix(h) x``; then the channel permutation
    ``y[c] = x[permutation[c]]``. Saturation and hue keep grey values and the grey axis, so contrast
    commutes with them and the order of the first four steps does not matter (no clipping in between).
    """
    linear = saturation * _EYE + (1.0 - saturation) * _ONES_GREY
    if hue != 0.0:
        linear = hue_matrix(hue) @ linear
    affine = np.empty((3, 4))
    affine[:, :3] = (contrast * brightness) * linear
    affine[:, 3] = (1.0 - contrast) * brightness * grey_mean
    if tuple(permutation) != (0, 1, 2):
        affine = affine[list(permutation)]
    return affine


class PhotometricDistort(A.ImageOnlyTransform):
    """SSD/torchvision photometric distortion as one affine colour map (see :func:`photometric_matrix`).

    Differences from torchvision's ``RandomPhotometricDistort``: values are rounded and clipped to uint8 once
    at the end rather than after every step, and hue is a rotation about the grey axis rather than an HSV
    shift (both keep the computation in RGB and make it one pass over the pixels).
    """

    def __init__(
        self,
        brightness: tuple[float, float] = (0.875, 1.125),
        contrast: tuple[float, float] = (0.5, 1.5),
        saturation: tuple[float, float] = (0.5, 1.5),
        hue: float = 0.05,
        channel_shuffle: bool = True,
        p_each: float = 0.5,
        p: float = 1.0,
    ):
        super().__init__(p=p)
        self.brightness = tuple(brightness)
        self.contrast = tuple(contrast)
        self.saturation = tuple(saturation)
        self.hue = hue
        self.channel_shuffle = channel_shuffle
        self.p_each = p_each

    def get_params(self) -> dict[str, Any]:
        """Brightness, contrast, saturation and hue, each drawn with probability ``p_each``, and a channel
        permutation, from ``PHOTOMETRIC_DRAWS`` uniforms of the transform's numpy generator (a fixed count, see
        :func:`cvkit.transforms._kernels.photometric_params` for the rule)."""
        u = self.random_generator.random(PHOTOMETRIC_DRAWS)
        brightness, contrast, saturation, hue, p0, p1, p2 = photometric_params(u, *self.numeric_args())
        return {
            "brightness": brightness,
            "contrast": contrast,
            "saturation": saturation,
            "hue": hue,
            "permutation": (p0, p1, p2),
        }

    def apply(
        self,
        img: np.ndarray,
        brightness: float = 1.0,
        contrast: float = 1.0,
        saturation: float = 1.0,
        hue: float = 0.0,
        permutation: tuple[int, ...] = (0, 1, 2),
        dst: np.ndarray | None = None,
        region: tuple[int, int, int, int] | None = None,
        **params: Any,
    ) -> np.ndarray:
        """The colour map on ``img`` (written into ``dst`` when given: an array of ``img``'s shape and dtype).

        ``region = (x0, y0, x1, y1)`` (with ``dst``): only those pixels are mapped, into the same place in
        ``dst`` (the rest of ``dst`` is left as it is); the contrast's grey mean is still the whole image's.
        The pipeline passes the part of the image its next resampling reads.
        """
        if brightness == contrast == saturation == 1.0 and hue == 0.0 and tuple(permutation) == (0, 1, 2):
            return img
        if contrast != 1.0:
            m = cv2.mean(img)
            grey_mean = _GREY_R * m[0] + _GREY_G * m[1] + _GREY_B * m[2]
        else:
            grey_mean = 0.0
        p0, p1, p2 = permutation
        affine = photometric_affine(grey_mean, brightness, contrast, saturation, hue, p0, p1, p2)  # photometric_matrix
        if region is not None and dst is not None:
            x0, y0, x1, y1 = region
            cv2.transform(img[y0:y1, x0:x1], affine, dst=dst[y0:y1, x0:x1])
            return dst
        return cv2.transform(img, affine, dst=dst)

    def numeric_args(self) -> tuple:
        """The arguments of :func:`cvkit.transforms._kernels.photometric_params` after ``u``."""
        (b_lo, b_hi), (c_lo, c_hi), (s_lo, s_hi) = self.brightness, self.contrast, self.saturation
        return (float(b_lo), float(b_hi), float(c_lo), float(c_hi), float(s_lo), float(s_hi), float(self.hue),
                bool(self.channel_shuffle), float(self.p_each))

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("brightness", "contrast", "saturation", "hue", "channel_shuffle", "p_each")


class ZoomOut(A.DualTransform):
    """Place the image on a canvas ``r ~ U(1, max_ratio)`` times larger, filled with ``fill`` (RGB uint8)."""

    def __init__(self, max_ratio: float = 4.0, fill: Sequence[float] = (124, 116, 104), p: float = 0.5):
        super().__init__(p=p)
        if max_ratio < 1:
            raise ValueError(f"max_ratio must be >= 1, got {max_ratio}")
        self.max_ratio = max_ratio
        self.fill = tuple(float(v) for v in fill)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """Canvas and position from ``ZOOM_OUT_DRAWS`` uniforms of the numpy generator
        (:func:`cvkit.transforms._kernels.zoom_out_params`)."""
        height, width = params["shape"][:2]
        u = self.random_generator.random(ZOOM_OUT_DRAWS)
        canvas_h, canvas_w, top, left = zoom_out_params(u, width, height, float(self.max_ratio))
        return {"canvas": (canvas_h, canvas_w), "top": top, "left": left}

    def apply(self, img: np.ndarray, canvas: tuple[int, int], top: int, left: int, **params: Any) -> np.ndarray:
        height, width = img.shape[:2]
        bottom, right = canvas[0] - height - top, canvas[1] - width - left
        value = self.fill[: img.shape[2]] if img.ndim == 3 else self.fill[0]
        return cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=value)

    def apply_to_bboxes(
        self, bboxes: np.ndarray, canvas: tuple[int, int], top: int, left: int, **params: Any
    ) -> np.ndarray:
        if len(bboxes) == 0:
            return bboxes
        height, width = params["shape"][:2]
        rows = np.ascontiguousarray(bboxes, dtype=np.float64)
        # x' = (x * W + left) / W'
        return shift_scale_rows(rows, width / canvas[1], left / canvas[1], height / canvas[0], top / canvas[0])

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("max_ratio", "fill")


_NO_BOXES = np.zeros((0, 4))


class MinIoURandomCrop(A.DualTransform):
    """The SSD min-IoU random crop (see the module docstring for the exact rule).

    The whole search is one numba call (:func:`cvkit.transforms._kernels.search_crop_window`): one uniform
    drawn from the transform's numpy generator seeds the random numbers of every round and window.
    """

    def __init__(
        self,
        min_ious: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9, 1.0),
        min_scale: float = 0.3,
        max_aspect: float = 2.0,
        trials: int = 50,
        max_rounds: int = 50,
        p: float = 1.0,
    ):
        super().__init__(p=p)
        if not min_ious:
            raise ValueError("min_ious must not be empty")
        self.min_ious = tuple(float(v) for v in min_ious)
        self._min_ious = np.array(self.min_ious, dtype=np.float64)
        self.min_scale = min_scale
        self.max_aspect = max_aspect
        self.trials = trials
        self.max_rounds = max_rounds

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        bboxes = data.get("bboxes")
        rows = _NO_BOXES if bboxes is None or len(bboxes) == 0 else np.ascontiguousarray(bboxes, dtype=np.float64)
        return {"crop": self.search(rows, width, height, float(self.random_generator.random()))}

    def search(self, rows: np.ndarray, width: int, height: int, u: float) -> tuple[int, int, int, int]:
        """The crop window for normalized ``rows`` on a ``width x height`` image, searched with the random
        numbers seeded by the uniform ``u`` (the whole image when ``max_rounds`` rounds accept none)."""
        status, x0, y0, x1, y1 = search_crop_window(
            u, self._min_ious, rows, width, height, float(self.min_scale), float(self.max_aspect), int(self.trials),
            int(self.max_rounds), float(width), float(height),
        )
        if status < 0:
            return (0, 0, width, height)
        return (int(x0), int(y0), int(x1), int(y1))

    def apply(self, img: np.ndarray, crop: tuple[int, int, int, int], **params: Any) -> np.ndarray:
        x0, y0, x1, y1 = crop
        return img[y0:y1, x0:x1]

    def apply_to_bboxes(self, bboxes: np.ndarray, crop: tuple[int, int, int, int], **params: Any) -> np.ndarray:
        if len(bboxes) == 0:
            return bboxes
        height, width = params["shape"][:2]
        rows = np.ascontiguousarray(bboxes, dtype=np.float64)
        return crop_boxes(rows, width, height, *(int(v) for v in crop))

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("min_ious", "min_scale", "max_aspect", "trials", "max_rounds")
