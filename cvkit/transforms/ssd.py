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
    RGB_TO_YIQ,
    YIQ_TO_RGB,
    crop_boxes,
    find_crop_window,
    photometric_affine,
    shift_scale_rows,
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
        rnd = self.py_random

        def maybe(low: float, high: float, neutral: float) -> float:
            return rnd.uniform(low, high) if rnd.random() < self.p_each else neutral

        brightness = maybe(self.brightness[0], self.brightness[1], 1.0)
        contrast = maybe(self.contrast[0], self.contrast[1], 1.0)
        saturation = maybe(self.saturation[0], self.saturation[1], 1.0)
        hue = maybe(-self.hue, self.hue, 0.0)
        permutation = (0, 1, 2)
        if self.channel_shuffle and rnd.random() < self.p_each:
            permutation = tuple(rnd.sample(range(3), 3))
        return {
            "brightness": brightness,
            "contrast": contrast,
            "saturation": saturation,
            "hue": hue,
            "permutation": permutation,
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
        **params: Any,
    ) -> np.ndarray:
        """The colour map on ``img`` (written into ``dst`` when given: an array of ``img``'s shape and dtype)."""
        if brightness == contrast == saturation == 1.0 and hue == 0.0 and tuple(permutation) == (0, 1, 2):
            return img
        if contrast != 1.0:
            m = cv2.mean(img)
            grey_mean = _GREY_R * m[0] + _GREY_G * m[1] + _GREY_B * m[2]
        else:
            grey_mean = 0.0
        p0, p1, p2 = permutation
        affine = photometric_affine(grey_mean, brightness, contrast, saturation, hue, p0, p1, p2)  # photometric_matrix
        return cv2.transform(img, affine, dst=dst)

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
        height, width = params["shape"][:2]
        ratio = self.py_random.uniform(1.0, self.max_ratio)
        canvas_h, canvas_w = int(height * ratio), int(width * ratio)
        top = self.py_random.randint(0, canvas_h - height)
        left = self.py_random.randint(0, canvas_w - width)
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

    Rounds (a min-IoU choice plus ``trials`` windows each) are drawn one, then eight at a time, and searched
    in order by a numba kernel (:func:`cvkit.transforms._kernels.find_crop_window`), as if drawn one by one.
    """

    _CHUNK = 8

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
        done, choices = 0, len(self._min_ious)
        while done < self.max_rounds:  # random numbers for a chunk of rounds, then one kernel call
            # most samples settle in the first round: draw one round first, then chunks of eight
            rounds = min(1 if done == 0 else self._CHUNK, self.max_rounds - done)
            done += rounds
            draws = self.random_generator.random(rounds * (1 + 4 * self.trials))
            min_ious = self._min_ious[(draws[:rounds] * choices).astype(np.intp)]  # uniform choice per round
            uniforms = draws[rounds:].reshape(rounds, self.trials, 4)
            status, x0, y0, x1, y1 = find_crop_window(
                uniforms, min_ious, rows, width, height, float(self.min_scale), float(self.max_aspect),
                float(width), float(height),
            )  # fmt: skip
            if status >= 0:
                return {"crop": (int(x0), int(y0), int(x1), int(y1))}
        return {"crop": (0, 0, width, height)}

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
