"""The ``ssd_train`` pipeline's compiled path: :class:`SSDTrainPipeline`.

``ssd_train`` runs PhotometricDistort -> ZoomOut -> MinIoURandomCrop -> Resize [-> HorizontalFlip]. For that
sequence :class:`SSDTrainPipeline` (a :class:`~cvkit.transforms.pipeline.Pipeline`) replaces the step loop of
``Pipeline.__call__`` by two parts:

1. **plan** (:meth:`SSDTrainPipeline.prepare`): the python-random draws of the probabilistic steps, then one
   compiled call, :func:`cvkit.transforms._kernels.ssd_sample`, which draws the steps' parameters from one
   block of the shared numpy generator, moves, clips and filters the boxes step by step and counts the
   statistics. Its settings go in by name (an :class:`~cvkit.transforms._kernels.SSDConfig` record), its draws
   come back by name (an :class:`~cvkit.transforms._kernels.SSDDraws`).
2. **render** (:meth:`SSDTrainPipeline.finish`): the colour map on the part of the image the crop window shows,
   then one resampling through the composed map of the geometric steps (:func:`cvkit.transforms.geometry.render`),
   into the caller's ``out`` buffer when given.

Contract: for every seed, the same draws, boxes, labels, pixels and statistics as ``Pipeline.__call__`` (the
step loop) on the same transforms; ``tests/transforms/test_ssd_fast_path.py`` holds the loop as its reference.
It does not set the transforms' ``params``. The SSD transforms draw fixed counts of numbers from their numpy
generator (``PHOTOMETRIC_DRAWS``, ``ZOOM_OUT_DRAWS``, ``CROP_DRAWS``), so one block serves all steps; the crop
search is seeded by one of them.

Calls take the step loop instead when the compiled path does not apply: samples without boxes, geometry not
fused (``fuse_geometry=False``, or a resize interpolation the fusion does not support), a crop or resize with
``p < 1``, or transforms that no longer share the pipeline's numpy generator.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import albumentations as A
import numpy as np
import torch

from cvkit._arrays import as_numpy
from cvkit.transforms._kernels import (
    CROP_DRAWS,
    PHOTOMETRIC_DRAWS,
    ZOOM_OUT_DRAWS,
    SSDConfig,
    SSDDraws,
    boxes_from_rows,
    ssd_sample,
)
from cvkit.transforms.geometry import IDENTITY, AxisMap, map_of, render
from cvkit.transforms.pipeline import Out, Pipeline, StepStats, _as_array, _slot
from cvkit.transforms.ssd import MinIoURandomCrop, PhotometricDistort, ZoomOut

__all__ = ["SSDTrainPipeline", "is_ssd_sequence", "STEP_TOTALS_DTYPE"]

#: the record of one step's counts in the compiled path (``totals [6]``: the input, then the five steps):
#: :class:`StepStats`' fields, as int64
STEP_TOTALS_DTYPE = np.dtype([(field.name, np.int64) for field in dataclasses.fields(StepStats)])


def is_ssd_sequence(transforms: Sequence[A.BasicTransform]) -> bool:
    """``PhotometricDistort, ZoomOut, MinIoURandomCrop, Resize[, HorizontalFlip]`` with the crop and resize
    always applied (what :class:`SSDTrainPipeline` runs in one compiled call)."""
    return _has_ssd_steps(transforms) and transforms[2].p >= 1.0 and transforms[3].p >= 1.0


def _has_ssd_steps(transforms: Sequence[A.BasicTransform]) -> bool:
    """The transforms are ``PhotometricDistort, ZoomOut, MinIoURandomCrop, Resize[, HorizontalFlip]``."""
    kinds = [type(t) for t in transforms]
    flips = kinds[4:]
    return kinds[:4] == [PhotometricDistort, ZoomOut, MinIoURandomCrop, A.Resize] and flips in ([], [A.HorizontalFlip])


class _SSDPlan(NamedTuple):
    """What :meth:`SSDTrainPipeline.prepare` drew and computed for one sample."""

    sample: dict[str, Any]
    labels: np.ndarray
    draws: SSDDraws
    rows: np.ndarray  # the boxes left after the last step: normalized xyxy and the input row number
    fires_photo: bool
    fires_zoom: bool
    fires_flip: bool


class SSDTrainPipeline(Pipeline):
    """:class:`Pipeline` for the ``ssd_train`` sequence, with its box work in one compiled call (see the
    module docstring); the same arguments, outputs and statistics as ``Pipeline(transforms, ...)``.

    ``transforms`` must be ``PhotometricDistort, ZoomOut, MinIoURandomCrop, A.Resize`` and optionally
    ``A.HorizontalFlip`` (``ValueError`` otherwise); :attr:`compiled` says whether calls take the compiled path.
    """

    def __init__(
        self,
        transforms: Sequence[A.BasicTransform],
        as_tensor: bool = False,
        min_box_size: float = 1.0,
        min_visibility: float = 0.0,
        seed: int | None = None,
        name: str = "ssd_train",
        fuse_geometry: bool = True,
    ):
        if not _has_ssd_steps(transforms):
            raise ValueError(
                "SSDTrainPipeline runs PhotometricDistort, ZoomOut, MinIoURandomCrop, Resize[, HorizontalFlip]; got "
                f"{[type(t).__name__ for t in transforms]} (Pipeline runs any sequence)"
            )
        super().__init__(transforms, as_tensor, min_box_size, min_visibility, seed, name, fuse_geometry)
        # the compiled path resamples once through the composed map: every geometric step must be fusable
        self._ssd_sequence = is_ssd_sequence(self.transforms) and all(map_of(t) for t in self.transforms[1:])

    @property
    def compiled(self) -> bool:
        """Whether calls with boxes take the compiled path (else the step loop of :class:`Pipeline`)."""
        return self.fuse_geometry and self._ssd_sequence

    def __call__(self, sample: dict[str, Any], seed: int | None = None, out: Out = None) -> dict[str, Any]:
        """Transform a sample, as :meth:`Pipeline.__call__` (the same result, ``out`` likewise)."""
        if not (self.compiled and "boxes" in sample):
            return super().__call__(sample, seed, out)
        if seed is not None:
            self._set_random(seed)
        plan = self._plan(sample)
        if plan is None:  # nothing drawn yet: the step loop takes over from the same generator states
            return super().__call__(sample, None, out)
        return self._render(plan, dict(sample), out)

    def prepare(self, sample: dict[str, Any], seed: int) -> Any:
        """The first half of ``self(sample, seed=seed)`` (see :meth:`Pipeline.prepare`): every random draw
        and the box work; :meth:`finish` renders the pixels."""
        if self.compiled and "boxes" in sample:
            self._set_random(seed)
            plan = self._plan(sample)
            if plan is not None:
                return plan
        return super().prepare(sample, seed)

    def finish(self, prepared: Any, out: Out = None) -> dict[str, Any]:
        """The output sample of a :meth:`prepare` result (``out`` as in ``__call__``)."""
        if isinstance(prepared, _SSDPlan):
            return self._render(prepared, dict(prepared.sample), out)
        return super().finish(prepared, out)

    def reset_stats(self) -> None:
        super().reset_stats()
        #: the compiled path's counts per step: the input and five transforms, always (``ssd_sample`` writes
        #: six rows; without a flip the last one is not a step of this pipeline and is left out of ``stats``)
        self._totals = np.zeros(6, dtype=STEP_TOTALS_DTYPE)

    @property
    def stats(self) -> dict[str, StepStats]:
        """Per step: samples seen, times applied, boxes in, clipped (and kept), dropped (a snapshot), over both
        paths."""
        names = STEP_TOTALS_DTYPE.names or ()
        loop = super().stats
        return {
            step: StepStats(**{name: getattr(loop[step], name) + int(totals[name]) for name in names})
            for step, totals in zip(self.step_names, self._totals)
        }

    def _plan(self, sample: dict[str, Any]) -> _SSDPlan | None:
        """The draws and the box work of one sample (everything but the pixels); ``None``, before any draw,
        when the transforms no longer share one numpy generator."""
        photo, zoom, crop, resize = self.transforms[:4]
        flip = self.transforms[4] if len(self.transforms) > 4 else None
        generator = crop.random_generator
        if photo.random_generator is not generator or zoom.random_generator is not generator:
            return None
        image = sample["image"]
        boxes, labels = _host_array(sample["boxes"], np.float64), _host_array(sample["labels"], np.int64)
        height, width = image.shape[:2]
        # the python-random draws of should_apply, in step order (crop and resize have p = 1: no draw)
        fires_photo, fires_zoom = _should_apply(photo), _should_apply(zoom)
        fires_flip = flip is not None and _should_apply(flip)
        num_draws = (PHOTOMETRIC_DRAWS if fires_photo else 0) + (ZOOM_OUT_DRAWS if fires_zoom else 0) + CROP_DRAWS
        (b_lo, b_hi), (c_lo, c_hi), (s_lo, s_hi) = photo.brightness, photo.contrast, photo.saturation
        config = SSDConfig(
            width=width, height=height,
            photometric=fires_photo, brightness_lo=b_lo, brightness_hi=b_hi, contrast_lo=c_lo, contrast_hi=c_hi,
            saturation_lo=s_lo, saturation_hi=s_hi, hue=photo.hue, channel_shuffle=photo.channel_shuffle,
            p_each=photo.p_each,
            zoom_out=fires_zoom, max_ratio=zoom.max_ratio,
            min_scale=crop.min_scale, max_aspect=crop.max_aspect, trials=crop.trials, max_rounds=crop.max_rounds,
            out_width=resize.width, out_height=resize.height,
            flip=fires_flip,
            min_size=self.min_box_size, min_visibility=self.min_visibility,
        )
        draws, rows = ssd_sample(
            generator.random(num_draws), boxes.reshape(-1, 4), crop._min_ious, config.record(), self._totals
        )
        return _SSDPlan(sample, labels, draws, rows, fires_photo, fires_zoom, fires_flip)

    def _render(self, plan: _SSDPlan, result: dict[str, Any], out: Out = None) -> dict[str, Any]:
        """The pixels of a plan of :meth:`_plan`, and the output sample."""
        photo, zoom, _, resize = self.transforms[:4]
        draws = plan.draws
        image = plan.sample["image"]
        height, width = image.shape[:2]
        left, top = draws.left, draws.top
        x0, y0, x1, y1 = draws.crop
        # pixels: the colour map into the reused buffer, then one resampling through the composed map
        if plan.fires_photo:
            # only the part of the image the crop window shows (plus the bilinear/bicubic taps' reach) is read
            # by the resampling below: the colour map is computed there alone (left = top = 0 without zoom-out)
            region = (max(x0 - left - 2, 0), max(y0 - top - 2, 0), min(x1 - left + 2, width),
                      min(y1 - top + 2, height))
            if region[0] < region[2] and region[1] < region[3]:
                image = photo.apply(np.ascontiguousarray(image), brightness=draws.brightness,
                                    contrast=draws.contrast, saturation=draws.saturation, hue=draws.hue,
                                    permutation=draws.permutation, dst=self._scratch(image),
                                    region=region)
        # the composed map, as the steps' map functions (cvkit.transforms.geometry) compose it
        amap = IDENTITY.then(AxisMap(1.0, float(left), 1.0, float(top))) if plan.fires_zoom else IDENTITY
        amap = amap.then(AxisMap(1.0, float(-x0), 1.0, float(-y0)))
        amap = amap.then(AxisMap(resize.width / (x1 - x0), 0.0, resize.height / (y1 - y0), 0.0))
        if plan.fires_flip:
            amap = amap.then(AxisMap(-1.0, float(resize.width), 1.0, 0.0))
        size = (resize.height, resize.width)
        slot = _slot(_as_array(out), size + image.shape[2:], image.dtype)
        image = render(image, amap, size, resize.interpolation, zoom.fill if plan.fires_zoom else None, out=slot)
        if slot is None and self._scratch_buffer is not None and np.may_share_memory(image, self._scratch_buffer):
            image = image.copy()  # the whole colour-mapped image came through unchanged: the output owns its pixels
        result["image"] = self._finish_image(image, out if slot is not None else None)
        out_boxes, out_labels = boxes_from_rows(plan.rows, size[1], size[0], plan.labels)
        result["boxes"], result["labels"] = torch.from_numpy(out_boxes), torch.from_numpy(out_labels)
        return result


def _should_apply(t: A.BasicTransform) -> bool:
    """``t.should_apply()`` (albumentations 2.0.8): no draw when ``p <= 0`` or ``p >= 1``, else one python-random
    draw compared with ``p``."""
    p = t.p
    if p <= 0.0:
        return False
    return p >= 1.0 or t.py_random.random() < p


def _host_array(values: Any, dtype: Any) -> np.ndarray:
    """A CPU tensor's own array when it has ``dtype`` (float32 too for float64: rows_from_boxes widens it
    exactly), else :func:`cvkit._arrays.as_numpy` (a copy in ``dtype``)."""
    if type(values) is torch.Tensor and values.device.type == "cpu" and not values.requires_grad:
        array = values.numpy()
        if array.dtype == dtype or (dtype == np.float64 and array.dtype == np.float32):
            return array
    return as_numpy(values, dtype)
