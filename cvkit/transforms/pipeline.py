"""Run albumentations transforms on cvkit samples with cvkit's box rules and per-step box statistics.

:class:`Pipeline` takes a sample ``{"image": uint8 (H, W, 3), "boxes": float32 [M, 4] xyxy absolute,
"labels": int64 [M], ...}`` and returns a new sample with the transformed ``image`` (a uint8 ``(3, H', W')``
tensor with ``as_tensor=True`` -- a channel-last view of the pixels, no copy -- else the uint8
``(H', W', 3)`` array), ``boxes``
(torch float32 [M', 4] xyxy absolute pixels of the output image) and ``labels`` (torch int64 [M']); other
keys are passed through. Samples without ``boxes`` (classification) go through the image path only.

Box processing (albumentations' order, done here once per step):

1. On entry boxes are converted once to albumentations' normalized ``[0, 1]`` xyxy, with each box's row
   number appended as an extra column.
2. Each transform moves the boxes exactly with the image (``apply_to_bboxes``); a transform may drop boxes
   itself (the min-IoU crop drops boxes whose centre falls outside the window).
3. After every dual (geometric) transform, and on entry: boxes are **clipped** to the image, then
   **dropped** when their width or height is below ``min_box_size`` pixels, when less than
   ``min_visibility`` of their area survived the clipping, or when no area is left. Labels are filtered in
   the same step (they are looked up by the row column at the end).
4. On exit boxes are converted back to absolute xyxy pixels of the output image.

``pipeline.stats`` counts per step how many boxes came in, how many were clipped (and kept) and how many
were dropped; :meth:`Pipeline.format_stats` prints them.

The pipeline does not normalize: its output stays uint8 (the presets' ``(3, H, W)`` tensors), the loaders
ship uint8 batches and the model's first module normalizes them on the training device
(:class:`cvkit.models.preprocess.ImageNormalizer`, from ``pixel_mean`` / ``pixel_std`` buffers in its
state_dict), as Detectron2 and torchvision's detection models do. A worker then ships a quarter of the bytes
(uint8, not float32) through shared memory and over PCIe, the float pass over the pixels happens once per
batch on the device instead of once per sample in a single-threaded worker, and a checkpoint or an exported
model takes images as a decoder gives them. ``transforms.mean`` is still the zoom-out / mosaic fill colour.

Randomness: ``pipeline(sample, seed=s)`` reseeds every transform from ``s`` (same ``s``: same output);
without ``seed`` the pipeline's own generators (seeded once at construction) advance.

Pixels of consecutive geometric steps (zoom-out, min-IoU crop, resize, horizontal flip: see
:mod:`cvkit.transforms.geometry`) are resampled once through their composed affine map
(``fuse_geometry=True``, the default); their parameters and boxes are still drawn and moved step by step,
in the same random order as an unfused run, so both give the same boxes, and the same pixels except
where a large zoom-out canvas shows (there within one grey level, see :mod:`cvkit.transforms.geometry`).

:class:`Pipeline` is the step loop: it runs any sequence of transforms, one step after another. The
``ssd_train`` preset builds a :class:`cvkit.transforms.ssd_fast.SSDTrainPipeline`, a :class:`Pipeline` that
runs that one sequence (PhotometricDistort, ZoomOut, MinIoURandomCrop, Resize, optional HorizontalFlip) with
its draws, box moves, filters and statistics in one compiled call; this loop is its reference (the same
draws, boxes, pixels and statistics, tested).

For loaders: ``pipeline(sample, seed, out=slot)`` writes the output pixels straight into a slot of a batch
buffer, and :meth:`Pipeline.prepare` / :meth:`Pipeline.finish` split a call in two, so that a worker can run
each half over a group of samples (:class:`cvkit.data.AugmentedDataset` does both in ``__getitems__``; the
step loop does all its work in ``finish``, the ``ssd_train`` pipeline its draws and box work in ``prepare``).

Why not ``A.Compose``: it checks and converts the boxes at every step, which costs more than the rest of the
SSD pipeline on a 300x300 image; here boxes are converted once and checked in one pass per step (a small
numba kernel), and the statistics come for free. The cvkit transforms still work inside ``A.Compose`` like
any albumentations transform.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import albumentations as A
import cv2
import numpy as np
import torch

from cvkit._arrays import as_numpy
from cvkit.transforms._kernels import boxes_from_rows, filter_boxes, hflip_rows, rows_from_boxes
from cvkit.transforms.geometry import IDENTITY, map_of, render
from cvkit.transforms.ssd import PhotometricDistort, ZoomOut

__all__ = ["Pipeline", "StepStats", "BatchSlot", "to_chw_tensor"]


@dataclass
class StepStats:
    calls: int = 0  # samples seen
    applied: int = 0  # samples the transform was applied to (its probability fired)
    boxes_in: int = 0
    clipped: int = 0  # boxes clipped to the image and kept
    dropped: int = 0  # boxes removed in this step (by the transform or by the size/visibility rule)


class BatchSlot(NamedTuple):
    """Slot ``k`` of a ``(B, H, W, C)`` batch buffer, as an ``out`` for :class:`Pipeline`: ``array`` is
    ``buffer.numpy()[k]`` (the pixels are written there) and ``image`` the ``(C, H, W)`` tensor view the
    sample then carries (``buffer.permute(0, 3, 1, 2)[k]``). A loader builds them once per batch, which
    saves two tensor calls per sample over passing ``buffer[k]``."""

    array: np.ndarray
    image: torch.Tensor


#: what ``out=`` takes: an array or CPU tensor of the output's ``(H, W, C)`` shape, or a :class:`BatchSlot`
Out = np.ndarray | torch.Tensor | BatchSlot | None


def to_chw_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 ``(H, W, C)`` array -> contiguous uint8 ``(C, H, W)`` tensor (one ``cv2.split`` into the planes)."""
    if image.ndim == 2:
        return torch.from_numpy(np.ascontiguousarray(image)).unsqueeze(0)
    height, width, channels = image.shape
    out = np.empty((channels, height, width), dtype=image.dtype)
    if channels == 1:
        out[0] = image[:, :, 0]
    else:
        cv2.split(np.ascontiguousarray(image), list(out))
    return torch.from_numpy(out)


class Pipeline:
    """A sequence of albumentations transforms applied with cvkit's box rules (see the module docstring)."""

    def __init__(
        self,
        transforms: Sequence[A.BasicTransform],
        as_tensor: bool = False,
        min_box_size: float = 1.0,
        min_visibility: float = 0.0,
        seed: int | None = None,
        name: str = "pipeline",
        fuse_geometry: bool = True,
    ):
        self.transforms = list(transforms)
        #: output images as uint8 ``(3, H, W)`` tensors (channel-last views), else ``(H, W, 3)`` arrays
        self.as_tensor = bool(as_tensor)
        self.min_box_size = float(min_box_size)
        self.min_visibility = float(min_visibility)
        self.name = name
        self.step_names = ["input"] + self._unique_names()
        self.fuse_geometry = fuse_geometry
        self._scratch_buffer: np.ndarray | None = None
        self.reset_stats()
        self._set_random(seed)

    @property
    def fuse_geometry(self) -> bool:
        """Resample consecutive geometric steps once (see the module docstring); ``False`` runs every step."""
        return self._fuse_geometry

    @fuse_geometry.setter
    def fuse_geometry(self, value: bool) -> None:
        self._fuse_geometry = bool(value)
        maps = [map_of(t) if value else None for t in self.transforms]
        self._steps = [
            _Step(name, t, map_fn, k + 1 < len(maps) and maps[k + 1] is not None)
            for k, (name, t, map_fn) in enumerate(zip(self.step_names[1:], self.transforms, maps))
        ]

    def prepare(self, sample: dict[str, Any], seed: int) -> Any:
        """The first half of ``self(sample, seed=seed)``; :meth:`finish` does the rest:
        ``[finish(p) for p in [prepare(s, seed) for ...]]`` gives the results of ``[self(s, seed=seed) for ...]``.
        A pipeline that separates its random draws and box work (``prepare``) from its pixel work (``finish``)
        keeps each half's code in the CPU caches when a loader runs each over a group of samples
        (:class:`~cvkit.transforms.ssd_fast.SSDTrainPipeline` does); the step loop does all its work in
        :meth:`finish`."""
        return _Deferred(sample, seed)

    def finish(self, prepared: Any, out: Out = None) -> dict[str, Any]:
        """The output sample of a :meth:`prepare` result (``out`` as in ``__call__``)."""
        return self(prepared.sample, seed=prepared.seed, out=out)

    def _unique_names(self) -> list[str]:
        names: list[str] = []
        for t in self.transforms:
            base = type(t).__name__
            name, k = base, 2
            while name in names:
                name, k = f"{base}#{k}", k + 1
            names.append(name)
        return names

    def _set_random(self, seed: int | None) -> None:
        """Seed the generators every transform draws from (``None``: fresh entropy).

        The first call gives the transforms one ``numpy`` generator and one ``random.Random``; later calls
        reseed both in place: ``random`` from ``seed``, numpy's PCG64 from a BLAKE2b hash of ``seed``
        (cheaper than building ``np.random.default_rng(seed)`` for every sample).
        """
        if seed is None or not hasattr(self, "_bit_generator"):
            self._bit_generator = np.random.PCG64(seed)
            self._py_random = random.Random(seed)
            generator = np.random.Generator(self._bit_generator)
            for t in self.transforms:
                t.set_random_state(generator, self._py_random)
            if seed is None:
                return
        self._py_random.seed(seed)
        digest = hashlib.blake2b(str(int(seed)).encode(), digest_size=32).digest()
        self._bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": int.from_bytes(digest[:16], "little"), "inc": int.from_bytes(digest[16:], "little") | 1},
            "has_uint32": 0,
            "uinteger": 0,
        }

    def reset_stats(self) -> None:
        self._stats: dict[str, StepStats] = {name: StepStats() for name in self.step_names}

    @property
    def stats(self) -> dict[str, StepStats]:
        """Per step: samples seen, times applied, boxes in, clipped (and kept), dropped (a snapshot)."""
        return {name: dataclasses.replace(s) for name, s in self._stats.items()}

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(t) for t in self.transforms)
        tensor = ", as_tensor=True" if self.as_tensor else ""
        return f"{type(self).__name__}({self.name!r}, [\n  {inner}\n]{tensor}, min_box_size={self.min_box_size})"

    # -- box rules ------------------------------------------------------------------------------

    def _filter(self, boxes: np.ndarray, shape: tuple[int, ...], stats: StepStats, n_before: int) -> np.ndarray:
        """Clip normalized boxes to [0, 1], drop the too small / too hidden ones; update ``stats``."""
        if len(boxes):
            boxes, clipped = filter_boxes(boxes, shape[1], shape[0], self.min_box_size, self.min_visibility)
            stats.clipped += int(clipped)
        stats.dropped += n_before - len(boxes)
        return boxes

    # -- application ------------------------------------------------------------------------------

    def __call__(self, sample: dict[str, Any], seed: int | None = None, out: Out = None) -> dict[str, Any]:
        """Transform a sample (see the module docstring); the input sample is not modified.

        ``out``: an optional ``(H, W, C)`` array or CPU tensor (a slot of a batch buffer), or a
        :class:`BatchSlot`, the output pixels are written into when the output has that shape and dtype; the
        returned image is then a view of it (for a tensor: ``out.permute(2, 0, 1)``, for a slot: its
        ``image``, sharing the buffer's storage). Otherwise it is not touched.
        """
        if seed is not None:
            self._set_random(seed)
        image = sample["image"]
        result = dict(sample)
        stats = self._stats
        if "boxes" not in sample:  # classification: image only
            stats["input"].calls += 1
            for step in self._steps:
                step_stats = stats[step.name]
                step_stats.calls += 1
                t = step.t
                image = step.apply_image(image) if step.image_only else t(image=image)["image"]
                step_stats.applied += bool(t.params)
            slot = _slot(_as_array(out), image.shape, image.dtype)
            if slot is not None:
                np.copyto(slot, image)
            result["image"] = self._finish_image(image, out if slot is not None else None)
            return result
        boxes = as_numpy(sample["boxes"], np.float64).reshape(-1, 4)
        labels = as_numpy(sample["labels"], np.int64).reshape(-1)
        shape = image.shape
        rows = rows_from_boxes(boxes, shape[1], shape[0])
        step_stats = stats["input"]
        step_stats.calls += 1
        step_stats.boxes_in += len(rows)
        rows = self._filter(rows, shape, step_stats, len(rows))
        # pending fused geometric steps on ``image``: their composed map, the (virtual) shape it leads to, the
        # interpolation and canvas fill; resampled once by ``render`` before any other step and at the end
        amap, interpolation, fill, pending = IDENTITY, cv2.INTER_LINEAR, None, False
        for step in self._steps:
            t, kind = step.t, step.kind
            step_stats = stats[step.name]
            step_stats.calls += 1
            step_stats.boxes_in += len(rows)
            if kind == _FUSED:  # sample and move the boxes now, resample the pixels once later
                params = step.draw(shape, {"image": _Shape(shape, image.dtype), "bboxes": rows})
                if params is None:
                    continue
                step_stats.applied += 1
                step_map, size = step.map_fn(t, params, (shape[0], shape[1]))
                amap = amap.then(step_map)
                shape = (size[0], size[1]) + shape[2:]
                if step.is_zoom_out:
                    fill = t.fill
                elif step.is_resize:
                    interpolation = t.interpolation
                pending = True
                if len(rows):
                    moved = step.move_rows(rows, params)
                    rows = moved if step.keeps_boxes else self._filter(moved, shape, step_stats, len(rows))
                continue
            if pending:
                image = render(image, amap, (shape[0], shape[1]), interpolation, fill)
                amap, interpolation, fill, pending = IDENTITY, cv2.INTER_LINEAR, None, False
            if kind == _DUAL:
                n_before = len(rows)
                dual = t(image=image, bboxes=rows)
                image = dual["image"]
                moved = np.asarray(dual["bboxes"], dtype=np.float64).reshape(-1, 5)
                rows = self._filter(moved, image.shape, step_stats, n_before)
            elif step.scratch_ok:  # the next step resamples these pixels into a new image: a reused buffer will do
                image = step.apply_image(image, self._scratch(image))
            else:
                image = step.apply_image(image)
            shape = image.shape
            step_stats.applied += bool(t.params)
        slot = _slot(_as_array(out), shape, image.dtype)
        if pending:
            image = render(image, amap, (shape[0], shape[1]), interpolation, fill, out=slot)
        elif slot is not None:
            np.copyto(slot, image)
            image = slot
        if self._scratch_buffer is not None and np.may_share_memory(image, self._scratch_buffer):
            image = image.copy()  # no geometric step fired after all: the output must own its pixels
        height, width = image.shape[:2]
        result["image"] = self._finish_image(image, out if slot is not None else None)
        out_boxes, out_labels = boxes_from_rows(rows, width, height, labels)
        result["boxes"], result["labels"] = torch.from_numpy(out_boxes), torch.from_numpy(out_labels)
        return result

    def _scratch(self, image: np.ndarray) -> np.ndarray:
        """A buffer of ``image``'s shape and dtype, reused from call to call (not thread-safe, as the generators)."""
        buffer = self._scratch_buffer
        if buffer is None or buffer.shape != image.shape or buffer.dtype != image.dtype:
            buffer = self._scratch_buffer = np.empty_like(image)
        return buffer

    def _finish_image(self, image: np.ndarray, out: Out = None) -> torch.Tensor | np.ndarray:
        """uint8 ``(3, H, W)`` tensor (a channel-last view: strides ``(1, 3W, 3)``) with ``as_tensor``, else the
        array. The collate functions stack such views without transposing; the model's normalizer writes its
        float output in the standard contiguous layout. ``out``: the caller's buffer the pixels were written
        into (a tensor's own view is returned, sharing its storage)."""
        if not self.as_tensor:
            return image
        if isinstance(out, BatchSlot):
            return out.image
        if isinstance(out, torch.Tensor):
            return out.permute(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)

    def format_stats(self) -> str:
        """A table: per step, samples, times applied, boxes in, clipped, dropped."""
        lines = [f"{'step':<22}{'samples':>9}{'applied':>9}{'boxes in':>10}{'clipped':>9}{'dropped':>9}"]
        for name in self.step_names:
            s = self.stats[name]
            lines.append(f"{name:<22}{s.calls:>9}{s.applied:>9}{s.boxes_in:>10}{s.clipped:>9}{s.dropped:>9}")
        return "\n".join(lines)


#: step kinds: image-only, dual (run whole, boxes through albumentations), fused geometric (see ``_Step``)
_IMAGE_ONLY, _DUAL, _FUSED = 0, 1, 2
#: the attributes ``BasicTransform.update_transform_params`` copies into the parameters when a transform has them
_PARAM_ATTRIBUTES = ("interpolation", "fill", "fill_mask")


class _Step:
    """One transform of a pipeline, with what ``Pipeline.__call__`` needs to run it quickly.

    ``draw`` returns the parameters ``t(image=..., bboxes=...)`` would use, drawn exactly as
    ``BasicTransform.__call__`` draws them (``should_apply``, ``get_params``, ``update_transform_params``,
    ``get_params_dependent_on_data``, in that order; ``t.params`` is set), or ``None`` when the transform's
    probability does not fire. For transforms that keep albumentations' ``update_transform_params`` it
    builds the same dictionary without that method's per-call lookups. The fused-vs-unfused tests check that
    both agree: the unfused run draws through albumentations' own ``__call__`` with the same seed.
    """

    __slots__ = ("name", "t", "kind", "image_only", "map_fn", "is_zoom_out", "is_resize", "keeps_boxes",
                 "move_rows", "scratch_ok", "_lean_update", "_attributes", "_data_dependent")

    def __init__(self, name: str, t: A.BasicTransform, map_fn: Any, next_fused: bool):
        self.name, self.t, self.map_fn = name, t, map_fn
        self.kind = _FUSED if map_fn is not None else _DUAL if isinstance(t, A.DualTransform) else _IMAGE_ONLY
        self.image_only = isinstance(t, A.ImageOnlyTransform)
        cls = type(t)
        self.is_zoom_out = isinstance(t, ZoomOut)
        self.is_resize = cls is A.Resize
        #: steps that keep every box inside the image and its size in pixels: nothing to clip or drop after them
        self.keeps_boxes = isinstance(t, (ZoomOut, A.HorizontalFlip, A.VerticalFlip))
        if cls is A.Resize:  # normalized boxes do not move
            self.move_rows = _same_rows
        elif cls is A.HorizontalFlip:
            self.move_rows = _hflip_rows
        else:
            self.move_rows = functools.partial(_apply_to_rows, t)
        self.scratch_ok = isinstance(t, PhotometricDistort) and next_fused
        self._lean_update = cls.update_transform_params is A.BasicTransform.update_transform_params
        self._attributes = tuple(key for key in _PARAM_ATTRIBUTES if hasattr(t, key))
        self._data_dependent = cls.get_params_dependent_on_data is not A.BasicTransform.get_params_dependent_on_data

    def draw(self, shape: tuple[int, ...], data: dict[str, Any]) -> dict[str, Any] | None:
        t = self.t
        t.params = {}
        if not t.should_apply():
            return None
        params = t.get_params()
        if self._lean_update:
            params["shape"] = shape
            for key in self._attributes:
                params[key] = getattr(t, key)
        else:
            params = t.update_transform_params(params, data)
        if self._data_dependent:
            params.update(t.get_params_dependent_on_data(params=params, data=data))
        t.params = params
        return params

    def apply_image(self, image: np.ndarray, dst: np.ndarray | None = None) -> np.ndarray:
        """``t(image=image)["image"]`` for an image-only transform: the same draws, without albumentations'
        per-call bookkeeping (``dst``: PhotometricDistort writes into this buffer)."""
        params = self.draw(image.shape, {"image": image})
        if params is None:
            return image
        if dst is not None:
            return self.t.apply(np.ascontiguousarray(image), dst=dst, **params)
        return np.ascontiguousarray(self.t.apply(np.ascontiguousarray(image), **params))


def _as_array(out: Out) -> np.ndarray | None:
    """The array of an ``out`` buffer (a CPU tensor's own memory)."""
    if isinstance(out, BatchSlot):
        return out.array
    return out.numpy() if isinstance(out, torch.Tensor) else out


def _slot(out: np.ndarray | None, shape: tuple[int, ...], dtype: Any) -> np.ndarray | None:
    """``out`` when it can hold an output image of ``shape`` and ``dtype``, else ``None``."""
    if out is None or tuple(out.shape) != tuple(shape) or out.dtype != dtype:
        return None
    return out


def _same_rows(rows: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    return rows


def _hflip_rows(rows: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    return hflip_rows(rows)


def _apply_to_rows(t: A.BasicTransform, rows: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    return np.asarray(t.apply_to_bboxes(rows, **params), dtype=np.float64).reshape(-1, rows.shape[1])


class _Deferred(NamedTuple):
    """A sample whose whole pipeline runs in :meth:`Pipeline.finish`."""

    sample: dict[str, Any]
    seed: int


class _Shape:
    """Stands in for an image whose pixels are not computed yet: albumentations only reads its shape."""

    __slots__ = ("shape", "dtype")

    def __init__(self, shape: tuple[int, ...], dtype: Any):
        self.shape = shape
        self.dtype = dtype
