"""Run albumentations transforms on cvkit samples with cvkit's box rules and per-step box statistics.

:class:`Pipeline` takes a sample ``{"image": uint8 (H, W, 3), "boxes": float32 [M, 4] xyxy absolute,
"labels": int64 [M], ...}`` and returns a new sample with the transformed ``image`` (a uint8 ``(3, H', W')``
tensor when ``mean``/``std`` are given -- a channel-last view of the pixels, no copy -- else the uint8
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

Normalization runs on the batch, not on the sample: with ``mean``/``std`` the pipeline ends in a uint8
``(3, H, W)`` tensor and :attr:`Pipeline.normalize` (a :class:`Normalize`) turns a collated batch into
float32 ``(x / 255 - mean) / std`` on whatever device it is on. cvkit's loaders attach it to every batch
(``batch["normalize"]``) and the engine applies it after moving the batch to the training device, as
Detectron2, MMDetection 3 and torchvision's detection models do. A worker then ships a quarter of the
bytes (uint8, not float32) through shared memory and over PCIe, and the float pass over the pixels
happens once per batch on the device instead of once per sample in a single-threaded worker (on a
300x300 image it cost about as much as the whole augmentation). ``mean``/``std`` stay part of the data
pipeline's config and of the checkpoint's ``preprocess`` block.

Randomness: ``pipeline(sample, seed=s)`` reseeds every transform from ``s`` (same ``s``: same output);
without ``seed`` the pipeline's own generators (seeded once at construction) advance.

Pixels of consecutive geometric steps (zoom-out, min-IoU crop, resize, horizontal flip: see
:mod:`cvkit.transforms.geometry`) are resampled once through their composed affine map
(``fuse_geometry=True``, the default); their parameters and boxes are still drawn and moved step by step,
in the same random order as an unfused run, so both give the same boxes, and the same pixels except
where a large zoom-out canvas shows (there within one grey level, see :mod:`cvkit.transforms.geometry`).

Why not ``A.Compose``: its per-step box checks and conversions cost about 0.15 ms each on one core
(measured with albumentations 2.0.8), more than the rest of the SSD pipeline on a 300x300 image; here
boxes are converted once and checked in one pass per step (a small numba kernel), and the statistics come
for free. The cvkit transforms still work inside ``A.Compose`` like any albumentations transform.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch

from cvkit._arrays import as_numpy
from cvkit.transforms._kernels import boxes_from_rows, filter_boxes, rows_from_boxes
from cvkit.transforms.geometry import IDENTITY, map_of, render
from cvkit.transforms.ssd import PhotometricDistort, ZoomOut

__all__ = ["Pipeline", "StepStats", "Normalize", "to_normalized_tensor", "to_chw_tensor"]


@dataclass
class StepStats:
    calls: int = 0  # samples seen
    applied: int = 0  # samples the transform was applied to (its probability fired)
    boxes_in: int = 0
    clipped: int = 0  # boxes clipped to the image and kept
    dropped: int = 0  # boxes removed in this step (by the transform or by the size/visibility rule)


def to_normalized_tensor(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` -> float32 ``(3, H, W)`` tensor ``(x / 255 - mean) / std`` (mean, std in [0, 1] units).

    The same values as ``Normalize(mean, std)(to_chw_tensor(image))``, for one image on the CPU.
    """
    return Normalize(tuple(mean), tuple(std))(to_chw_tensor(image))


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


@dataclass(frozen=True)
class Normalize:
    """The last preprocessing step, run on a batch: uint8 images -> float32 ``(x / 255 - mean) / std``.

    ``mean``/``std`` per RGB channel in [0, 1] units. Call it on a uint8 ``(B, 3, H, W)`` or ``(3, H, W)``
    tensor, or a list of them, on any device; the result is on the same device. It computes
    ``float(x) * (1 / (255 std)) + (-mean / std)`` in float32, the same values on every device.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, images: torch.Tensor | Sequence[torch.Tensor]) -> Any:
        if not isinstance(images, torch.Tensor):
            return [self(im) for im in images]
        if images.dtype != torch.uint8:
            raise TypeError(f"Normalize expects uint8 images (0..255), got {images.dtype}")
        if images.ndim not in (3, 4) or images.shape[-3] != len(self.mean):
            raise ValueError(f"Normalize expects (B, {len(self.mean)}, H, W) or ({len(self.mean)}, H, W) images, "
                             f"got shape {tuple(images.shape)}")  # fmt: skip
        if images.device.type == "cpu" and images.ndim == 4 and images.permute(0, 2, 3, 1).is_contiguous():
            return self._normalize_channel_last_cpu(images)
        scale, shift = _normalization_tensors(self.mean, self.std, images.device)
        # one pass converts to float32 in the standard layout, whatever the input's strides (channel-last views)
        return images.to(torch.float32, memory_format=torch.contiguous_format).mul_(scale).add_(shift)

    def _normalize_channel_last_cpu(self, images: torch.Tensor) -> torch.Tensor:
        """The same values for a CPU batch of channel-last views (cvkit's collated batches), about twice as
        fast as torch's transposing conversion on one thread: per image, ``cv2.split`` into uint8 planes,
        then ``float32(x) * scale + shift`` per plane with numpy (the same two float32 roundings)."""
        scale, shift = _normalization(self.mean, self.std)
        batch, channels, height, width = images.shape
        out = np.empty((batch, channels, height, width), dtype=np.float32)
        planes = np.empty((channels, height, width), dtype=np.uint8)
        pixels = images.permute(0, 2, 3, 1).numpy()  # (B, H, W, C), no copy
        for b in range(batch):
            cv2.split(pixels[b], list(planes))
            for c in range(channels):
                np.multiply(planes[c], scale[c], out=out[b, c], dtype=np.float32)
                out[b, c] += shift[c]
        return torch.from_numpy(out)


@functools.lru_cache(maxsize=16)
def _normalization(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[list, list]:
    """Per-channel float32 ``scale = 1 / (255 std)`` and ``shift = -mean / std`` (numpy scalars)."""
    return [np.float32(1.0 / (255.0 * s)) for s in std], [np.float32(-m / s) for m, s in zip(mean, std)]


@functools.lru_cache(maxsize=16)
def _normalization_tensors(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 ``(C, 1, 1)`` ``scale = 1 / (255 std)`` and ``shift = -mean / std`` on ``device``."""
    scale_values, shift_values = _normalization(mean, std)
    scale = torch.tensor(scale_values, dtype=torch.float32).view(-1, 1, 1)
    shift = torch.tensor(shift_values, dtype=torch.float32).view(-1, 1, 1)
    return scale.to(device), shift.to(device)


class Pipeline:
    """A sequence of albumentations transforms applied with cvkit's box rules (see the module docstring)."""

    def __init__(
        self,
        transforms: Sequence[A.BasicTransform],
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        min_box_size: float = 1.0,
        min_visibility: float = 0.0,
        seed: int | None = None,
        name: str = "pipeline",
        fuse_geometry: bool = True,
    ):
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std (normalize to a tensor) or neither (keep uint8)")
        self.transforms = list(transforms)
        self.mean = None if mean is None else tuple(float(v) for v in mean)
        self.std = None if std is None else tuple(float(v) for v in std)
        #: the batch step that finishes this pipeline's images (``None`` without mean/std)
        self.normalize = None if self.mean is None or self.std is None else Normalize(self.mean, self.std)
        self.min_box_size = float(min_box_size)
        self.min_visibility = float(min_visibility)
        self.name = name
        self.fuse_geometry = fuse_geometry
        self.step_names = ["input"] + self._unique_names()
        self._maps = [map_of(t) for t in self.transforms]
        self._scratch_buffer: np.ndarray | None = None
        self.reset_stats()
        self._set_random(seed)

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
        (a third of the cost of building ``np.random.default_rng(seed)`` for every sample).
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
        self.stats: dict[str, StepStats] = {name: StepStats() for name in self.step_names}

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(t) for t in self.transforms)
        norm = "" if self.mean is None else f", mean={self.mean}, std={self.std}"
        return f"Pipeline({self.name!r}, [\n  {inner}\n]{norm}, min_box_size={self.min_box_size})"

    # -- box rules ------------------------------------------------------------------------------

    def _filter(self, boxes: np.ndarray, shape: tuple[int, ...], stats: StepStats, n_before: int) -> np.ndarray:
        """Clip normalized boxes to [0, 1], drop the too small / too hidden ones; update ``stats``."""
        if len(boxes):
            boxes, clipped = filter_boxes(boxes, shape[1], shape[0], self.min_box_size, self.min_visibility)
            stats.clipped += int(clipped)
        stats.dropped += n_before - len(boxes)
        return boxes

    # -- application ------------------------------------------------------------------------------

    def __call__(self, sample: dict[str, Any], seed: int | None = None) -> dict[str, Any]:
        """Transform a sample (see the module docstring); the input sample is not modified."""
        if seed is not None:
            self._set_random(seed)
        image = sample["image"]
        out = dict(sample)
        if "boxes" not in sample:  # classification: image only
            self._count("input")
            for name, t in zip(self.step_names[1:], self.transforms):
                stats = self._count(name)
                image = _apply_image_only(t, image) if isinstance(t, A.ImageOnlyTransform) else t(image=image)["image"]
                stats.applied += bool(t.params)
            out["image"] = self._finish_image(image)
            return out
        boxes = as_numpy(sample["boxes"], np.float64).reshape(-1, 4)
        labels = as_numpy(sample["labels"], np.int64).reshape(-1)
        height, width = image.shape[:2]
        rows = rows_from_boxes(boxes, width, height)
        rows = self._filter(rows, image.shape, self._count("input", len(rows)), len(rows))
        lazy = _LazyGeometry(image)
        maps = self._maps if self.fuse_geometry else [None] * len(self.transforms)
        for k, (name, t, map_fn) in enumerate(zip(self.step_names[1:], self.transforms, maps)):
            stats = self._count(name, len(rows))
            if map_fn is not None:  # sample and move the boxes now, resample the pixels once later
                params = lazy.sample(t, rows)
                if params is None:
                    continue
                stats.applied += 1
                lazy.push(t, map_fn, params)
                if len(rows):
                    moved = t.apply_to_bboxes(rows, **params)
                    if isinstance(t, _BOX_PRESERVING):  # inside the image, same size in pixels: nothing to filter
                        rows = moved
                    else:
                        n_before = len(rows)
                        rows = self._filter(np.asarray(moved, dtype=np.float64).reshape(-1, 5), lazy.shape, stats,
                                            n_before)  # fmt: skip
                continue
            image = lazy.render()
            if isinstance(t, A.DualTransform):
                n_before = len(rows)
                result = t(image=image, bboxes=rows)
                image = result["image"]
                moved = np.asarray(result["bboxes"], dtype=np.float64).reshape(-1, 5)
                rows = self._filter(moved, image.shape, stats, n_before)
            elif isinstance(t, PhotometricDistort) and k + 1 < len(maps) and maps[k + 1] is not None:
                # the next step resamples these pixels into a new image: they can live in a reused buffer
                image = _apply_image_only(t, image, self._scratch(image))
            else:
                image = _apply_image_only(t, image)
            stats.applied += bool(t.params)
            lazy = _LazyGeometry(image)
        image = lazy.render()
        if self._scratch_buffer is not None and np.shares_memory(image, self._scratch_buffer):
            image = image.copy()  # no geometric step fired after all: the output must own its pixels
        height, width = image.shape[:2]
        out["image"] = self._finish_image(image)
        out_boxes, out_labels = boxes_from_rows(rows, width, height, labels)
        out["boxes"], out["labels"] = torch.from_numpy(out_boxes), torch.from_numpy(out_labels)
        return out

    def _scratch(self, image: np.ndarray) -> np.ndarray:
        """A buffer of ``image``'s shape and dtype, reused from call to call (not thread-safe, as the generators)."""
        buffer = self._scratch_buffer
        if buffer is None or buffer.shape != image.shape or buffer.dtype != image.dtype:
            buffer = self._scratch_buffer = np.empty_like(image)
        return buffer

    def _count(self, name: str, num_boxes: int = 0) -> StepStats:
        stats = self.stats[name]
        stats.calls += 1
        stats.boxes_in += num_boxes
        return stats

    def _finish_image(self, image: np.ndarray) -> torch.Tensor | np.ndarray:
        """uint8 ``(3, H, W)`` tensor (a channel-last view: strides ``(1, 3W, 3)``) when the pipeline normalizes
        (on the batch, later), else the array. The collate functions stack such views without transposing;
        :class:`Normalize` writes its float output in the standard contiguous layout."""
        if self.normalize is None:
            return image
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)

    def format_stats(self) -> str:
        """A table: per step, samples, times applied, boxes in, clipped, dropped."""
        lines = [f"{'step':<22}{'samples':>9}{'applied':>9}{'boxes in':>10}{'clipped':>9}{'dropped':>9}"]
        for name in self.step_names:
            s = self.stats[name]
            lines.append(f"{name:<22}{s.calls:>9}{s.applied:>9}{s.boxes_in:>10}{s.clipped:>9}{s.dropped:>9}")
        return "\n".join(lines)


def _apply_image_only(t: A.BasicTransform, image: np.ndarray, dst: np.ndarray | None = None) -> np.ndarray:
    """``t(image=image)["image"]`` for an image-only transform: the same draws in the same order
    (``should_apply``, ``get_params``, ``get_params_dependent_on_data``) and ``t.params`` set, without
    albumentations' per-call bookkeeping."""
    params = _draw_params(t, {"image": image})
    if params is None:
        return image
    if dst is not None:  # PhotometricDistort writes into a reused buffer
        return t.apply(np.ascontiguousarray(image), dst=dst, **params)
    return np.ascontiguousarray(t.apply(np.ascontiguousarray(image), **params))


def _draw_params(t: A.BasicTransform, data: dict[str, Any]) -> dict[str, Any] | None:
    """``t``'s parameters for ``data``, drawn as ``BasicTransform.__call__`` draws them (``should_apply``,
    ``get_params``, ``get_params_dependent_on_data``, in that order) and stored in ``t.params``;
    ``None`` when the transform's probability does not fire."""
    t.params = {}
    if not t.should_apply():
        return None
    params = t.update_transform_params(t.get_params(), data)
    params.update(t.get_params_dependent_on_data(params=params, data=data))
    t.params = params
    return params


#: geometric steps that keep every box inside the image and its size in pixels (nothing to clip or drop)
_BOX_PRESERVING = (ZoomOut, A.HorizontalFlip, A.VerticalFlip)


class _Shape:
    """Stands in for an image whose pixels are not computed yet: albumentations only reads its shape."""

    __slots__ = ("shape", "dtype")

    def __init__(self, shape: tuple[int, ...], dtype: Any):
        self.shape = shape
        self.dtype = dtype


class _LazyGeometry:
    """Pending geometric steps on ``image``: their composed map and the shape it leads to."""

    def __init__(self, image: np.ndarray):
        self._reset(image)

    def _reset(self, image: np.ndarray) -> None:
        self.image = image
        self.map = IDENTITY
        self.shape: tuple[int, ...] = image.shape
        self.interpolation = cv2.INTER_LINEAR
        self.fill: tuple[float, ...] | None = None
        self.pending = False

    def sample(self, t: A.BasicTransform, rows: np.ndarray) -> dict[str, Any] | None:
        """Draw ``t``'s parameters as ``t(image=..., bboxes=rows)`` would, for the current (virtual) shape.

        The random draws happen in the same order as in ``BasicTransform.__call__`` (``should_apply``,
        ``get_params``, ``get_params_dependent_on_data``), so fused and unfused runs agree for one seed.
        """
        return _draw_params(t, {"image": _Shape(self.shape, self.image.dtype), "bboxes": rows})

    def push(self, t: A.BasicTransform, map_fn: Any, params: dict[str, Any]) -> None:
        step, size = map_fn(t, params, (self.shape[0], self.shape[1]))
        self.map = self.map.then(step)
        self.shape = tuple(size) + self.shape[2:]
        if isinstance(t, ZoomOut):
            self.fill = t.fill
        if isinstance(t, A.Resize):
            self.interpolation = t.interpolation
        self.pending = True

    def render(self) -> np.ndarray:
        if not self.pending:
            return self.image
        image = render(self.image, self.map, (self.shape[0], self.shape[1]), self.interpolation, self.fill)
        self._reset(image)
        return image
