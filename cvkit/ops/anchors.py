"""Anchors: multi-scale generators in absolute-pixel xyxy and the d2l book's ``multibox_prior``.

Two generators share one base (cache, level bookkeeping, the build), as torchvision has two:
``AnchorGenerator`` (explicit sizes in pixels) and ``DefaultBoxGenerator`` (SSD's default boxes, scales
relative to the image).

Glossary: A anchors, K anchors per location of a level, (H, W) a feature map's size, image sizes are
``(height, width)`` in pixels.

Conventions (stated once, here):

- **Aspect ratio is width / height** everywhere in cvkit, as in SSD and the d2l book: a ratio-2 anchor
  is twice as wide as it is high. (torchvision's ``AnchorGenerator`` uses height / width; pass ``1 / r``
  to reproduce it.)
- **Order**: level by level; within a level, row-major over locations (y, then x); within a location,
  the level's K cell shapes in the order documented by the constructor. This is the order of an SSD
  head's ``(B, K*4, H, W) -> (B, H*W*K, 4)`` reshape.
- **Centres**: ``((x + offset) * stride_x, (y + offset) * stride_y)`` with ``offset = 0.5`` by default,
  i.e. the centres of the stride grid's cells.
- Anchors are not clipped to the image unless a mode says so (SSD clips the normalized *sizes* to
  [0, 1], as torchvision does, not the boxes).

Results are cached per (feature sizes, image size, device, dtype): after the first call a generator
returns the same tensor, so anchors are free inside a training loop. Treat it as read-only; an in-place
change is detected (through the tensor's version counter) and the anchors are rebuilt on the next call.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from cvkit.ops.assign import MatcherConfig

__all__ = ["AnchorGrid", "AnchorGenerator", "DefaultBoxGenerator", "AnchorConfig", "multibox_prior", "SSD300_SETTINGS"]

#: torchvision's ``ssd300_vgg16`` default boxes (feature maps 38, 19, 10, 5, 3, 1 on a 300x300 input).
SSD300_SETTINGS: dict[str, Any] = {
    "aspect_ratios": ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)),
    "scales": (0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05),
    "steps": (8, 16, 32, 64, 100, 300),
    "clip": True,
}

_CACHE_SIZE = 8


class _TensorCache:
    """A small LRU of tensors that notices in-place changes through ``Tensor._version``."""

    def __init__(self, size: int = _CACHE_SIZE) -> None:
        self.size = size
        self._items: OrderedDict[Any, tuple[Tensor, int]] = OrderedDict()

    def get(self, key: Any) -> Tensor | None:
        item = self._items.get(key)
        if item is None:
            return None
        tensor, version = item
        if tensor._version != version:  # modified in place by a caller: rebuild
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return tensor

    def put(self, key: Any, tensor: Tensor) -> None:
        self._items[key] = (tensor, tensor._version)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


def _size_pair(value: Any, what: str) -> tuple[int, int]:
    if isinstance(value, Tensor):
        if value.dim() < 2:
            raise ValueError(f"{what}: a tensor must have at least 2 dims (..., H, W), got {tuple(value.shape)}")
        value = value.shape[-2:]
    try:
        height, width = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a (height, width) pair, got {value!r}") from None
    if height <= 0 or width <= 0:
        raise ValueError(f"{what} must be positive, got {(height, width)}")
    return height, width


def _per_level(value: Any, num_levels: int) -> list[Any]:
    """A per-level list: a sequence of sequences is taken as is; a flat sequence is shared by all levels."""
    if len(value) and isinstance(value[0], (list, tuple)):
        return [tuple(v) for v in value]
    return [tuple(value)] * num_levels


def _fill_centred(out: np.ndarray, cx: np.ndarray, cy: np.ndarray, half: np.ndarray) -> None:
    """``out[i, j, k] = (cx[j], cy[i], cx[j], cy[i]) + half[k]`` for ``out`` of shape ``(H, W, K, 4)``.

    Two contiguous passes instead of a broadcast whose inner loop is 4 long: ``cy[i] * mask`` (mask 1 on
    the y entries, 0 on the x entries), then ``+ row`` with ``row[j, k] = (cx[j], 0, cx[j], 0) + half[k]``.
    Every entry is one float addition of the same two terms as the direct formula, so values are equal.
    """
    height, width, k = out.shape[:3]
    row = np.empty((width, k, 4), dtype=out.dtype)
    row[..., 0::2] = cx[:, None, None] + half[None, :, 0::2]
    row[..., 1::2] = half[None, :, 1::2]
    mask = np.zeros((width, k, 4), dtype=out.dtype)
    mask[..., 1::2] = 1
    flat = out.reshape(height, width * k * 4)
    np.multiply(cy[:, None], mask.reshape(1, -1), out=flat)
    flat += row.reshape(1, -1)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


class AnchorGrid:
    """What both generators share: cell shapes per level, the cache, the level bookkeeping and the build.

    A subclass sets ``self._cells`` (per level, the K cell shapes) and writes one level's anchors in
    :meth:`_fill_level`; :meth:`level_strides` says where its centres are.
    """

    def __init__(self, cells: list[list[tuple[float, float]]]) -> None:
        self._cells = cells
        self._cache = _TensorCache()

    # -- description -----------------------------------------------------------------------------

    @property
    def num_levels(self) -> int:
        return len(self._cells)

    def num_anchors_per_location(self) -> list[int]:
        """K per level."""
        return [len(c) for c in self._cells]

    def num_anchors_per_level(self, feature_sizes: Sequence[Any]) -> list[int]:
        """``H_l * W_l * K_l`` per level; their sum is the number of anchors."""
        sizes = self._feature_sizes(feature_sizes)
        return [h * w * len(c) for (h, w), c in zip(sizes, self._cells, strict=True)]

    def _feature_sizes(self, feature_sizes: Sequence[Any]) -> list[tuple[int, int]]:
        if isinstance(feature_sizes, Tensor) or not isinstance(feature_sizes, Sequence):
            raise TypeError("feature_sizes must be a list with one (H, W) pair or feature tensor per level")
        if len(feature_sizes) != self.num_levels:
            raise ValueError(
                f"this {type(self).__name__} has {self.num_levels} levels, so it expects {self.num_levels} "
                f"feature maps (one (H, W) per level), got {len(feature_sizes)}"
            )
        return [_size_pair(f, f"feature_sizes[{i}]") for i, f in enumerate(feature_sizes)]

    # -- generation ------------------------------------------------------------------------------

    def __call__(
        self,
        feature_sizes: Sequence[Any],
        image_size: Any,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Anchors ``[A, 4]`` xyxy in pixels of an image of ``image_size = (height, width)``.

        ``feature_sizes``: one ``(H, W)`` (or an NCHW feature tensor) per level. ``device`` defaults to
        the first feature tensor's device, else CPU. The result is cached (see the module docstring).
        """
        sizes = self._feature_sizes(feature_sizes)
        image = _size_pair(image_size, "image_size")
        if device is None:
            device = feature_sizes[0].device if isinstance(feature_sizes[0], Tensor) else torch.device("cpu")
        device = torch.device(device)
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating dtype, got {dtype}")
        key = (tuple(sizes), image, str(device), dtype)
        anchors = self._cache.get(key)
        if anchors is None:
            anchors = self._build(sizes, image, dtype).to(device=device, dtype=dtype)
            self._cache.put(key, anchors)
        return anchors

    def grid_anchors(self, feature_sizes: Sequence[Any], image_size: Any, **kwargs: Any) -> list[Tensor]:
        """The anchors split per level: a list of ``[H_l * W_l * K_l, 4]`` views of ``self(...)``."""
        anchors = self(feature_sizes, image_size, **kwargs)
        return list(anchors.split(self.num_anchors_per_level(feature_sizes)))

    def level_index(self, feature_sizes: Sequence[Any]) -> Tensor:
        """int64 ``[A]``: the level of every anchor."""
        counts = self.num_anchors_per_level(feature_sizes)
        return torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))

    def level_strides(self, feature_sizes: Sequence[Any], image_size: Any) -> list[tuple[float, float]]:
        """``(stride_y, stride_x)`` in pixels of every level's centre grid (by default ``image / feature``)."""
        sizes = self._feature_sizes(feature_sizes)
        img_h, img_w = _size_pair(image_size, "image_size")
        return [(img_h / fh, img_w / fw) for fh, fw in sizes]

    def clear_cache(self) -> None:
        self._cache.clear()

    def _build(self, sizes: list[tuple[int, int]], image: tuple[int, int], dtype: torch.dtype) -> Tensor:
        # numpy, written level by level into one preallocated array (small torch ops cost more each)
        np_dtype = np.float64 if _compute_dtype(dtype) == torch.float64 else np.float32
        counts = [h * w * len(c) for (h, w), c in zip(sizes, self._cells)]
        out = np.empty((sum(counts), 4), dtype=np_dtype)
        start = 0
        for k, (feature, count) in enumerate(zip(sizes, counts)):
            fh, fw = feature
            view = out[start : start + count].reshape(fh, fw, len(self._cells[k]), 4)  # (H, W, K, 4)
            self._fill_level(k, feature, image, view)
            start += count
        return torch.from_numpy(out)

    def _fill_level(self, k: int, feature: tuple[int, int], image: tuple[int, int], view: np.ndarray) -> None:
        raise NotImplementedError


class AnchorGenerator(AnchorGrid):
    """Multi-scale anchors in absolute-pixel xyxy for a list of feature maps, from sizes in pixels.

    Level ``l`` has the cell shapes ``w = s * sqrt(r)``, ``h = s / sqrt(r)`` for every ratio ``r`` of
    ``aspect_ratios[l]`` (outer loop) and every size ``s`` of ``sizes[l]`` in pixels (inner loop), so
    ``K = len(sizes[l]) * len(aspect_ratios[l])``. SSD's default boxes, with scales relative to the image,
    are :class:`DefaultBoxGenerator` (also reachable as ``AnchorGenerator.ssd(...)``).

    Args:
        sizes: per level, anchor sizes in pixels (sqrt of the area), e.g. ``((32,), (64,), ...)``.
        aspect_ratios: per level ratios (width / height), or one sequence shared by every level.
        strides: per level ``stride`` or ``(stride_y, stride_x)`` in pixels; ``None``: ``image / feature``
            per axis (a float, so the centres span the whole image).
        offset: centre offset in cells (0.5: cell centres; 0: cell corners, as torchvision's
            ``AnchorGenerator``).
        round_cells: round the zero-centred cell anchors ``(-w/2, -h/2, w/2, h/2)`` to whole pixels
            (torchvision's ``AnchorGenerator`` does).

    Call ``gen(feature_sizes, image_size)`` -> ``[A, 4]`` with ``A = sum_l H_l * W_l * K_l``.
    ``feature_sizes`` is one ``(H, W)`` per level (or the feature tensors themselves, NCHW).
    """

    def __init__(
        self,
        sizes: Sequence[Sequence[float]] | Sequence[float],
        aspect_ratios: Sequence[Sequence[float]] | Sequence[float] = (0.5, 1.0, 2.0),
        *,
        strides: Sequence[int | float | Sequence[float]] | None = None,
        offset: float = 0.5,
        round_cells: bool = False,
    ) -> None:
        if not len(sizes):
            raise ValueError("sizes must name at least one level")
        size_levels = [tuple(s) if isinstance(s, (list, tuple)) else (s,) for s in sizes]
        num_levels = len(size_levels)
        ratio_levels = _per_level(aspect_ratios, num_levels)
        if len(ratio_levels) != num_levels:
            raise ValueError(
                f"aspect_ratios has {len(ratio_levels)} levels but sizes has {num_levels}; expected one "
                f"sequence of ratios per level (or a single sequence shared by all levels)"
            )
        cells = []
        for level, (level_sizes, level_ratios) in enumerate(zip(size_levels, ratio_levels, strict=True)):
            if not level_sizes or not level_ratios:
                raise ValueError(f"level {level}: sizes and aspect_ratios must not be empty")
            if min(level_sizes) <= 0 or min(level_ratios) <= 0:
                raise ValueError(f"level {level}: sizes and aspect ratios must be positive")
            cells.append([(s * math.sqrt(r), s / math.sqrt(r)) for r in level_ratios for s in level_sizes])
        super().__init__(cells)
        self.sizes: list[tuple[float, ...]] = size_levels
        self.aspect_ratios: list[tuple[float, ...]] = ratio_levels
        self.strides = self._check_strides(strides, num_levels)
        self.offset = float(offset)
        self.round_cells = bool(round_cells)

    @staticmethod
    def _check_strides(strides: Any, num_levels: int) -> list[tuple[float, float]] | None:
        if strides is None:
            return None
        if len(strides) != num_levels:
            raise ValueError(
                f"strides has {len(strides)} entries but there are {num_levels} levels; expected {num_levels}"
            )
        out = []
        for s in strides:
            sy, sx = (float(s[0]), float(s[1])) if isinstance(s, (list, tuple)) else (float(s), float(s))
            if sy <= 0 or sx <= 0:
                raise ValueError(f"strides must be positive, got {s!r}")
            out.append((sy, sx))
        return out

    @staticmethod
    def ssd(aspect_ratios: Sequence[Sequence[float]], **kwargs: Any) -> DefaultBoxGenerator:
        """SSD default boxes: ``DefaultBoxGenerator(aspect_ratios, **kwargs)``."""
        return DefaultBoxGenerator(aspect_ratios, **kwargs)

    @staticmethod
    def ssd300() -> DefaultBoxGenerator:
        """torchvision's ``ssd300_vgg16`` default boxes: ``DefaultBoxGenerator.ssd300()``."""
        return DefaultBoxGenerator.ssd300()

    def __repr__(self) -> str:
        return (
            f"AnchorGenerator(sizes={self.sizes}, aspect_ratios={self.aspect_ratios}, "
            f"strides={self.strides}, offset={self.offset}, round_cells={self.round_cells})"
        )

    def level_strides(self, feature_sizes: Sequence[Any], image_size: Any) -> list[tuple[float, float]]:
        """``(stride_y, stride_x)`` in pixels of every level's centre grid."""
        if self.strides is not None:
            self._feature_sizes(feature_sizes)
            return list(self.strides)
        return super().level_strides(feature_sizes, image_size)

    def _fill_level(self, k: int, feature: tuple[int, int], image: tuple[int, int], view: np.ndarray) -> None:
        fh, fw = feature
        img_h, img_w = image
        cells = np.asarray(self._cells[k], dtype=np.float64)  # [K, 2] (w, h)
        exact = np.stack((-cells[:, 0], -cells[:, 1], cells[:, 0], cells[:, 1]), axis=1) / 2  # [K, 4]
        half = (np.round(exact.astype(np.float32)) if self.round_cells else exact).astype(view.dtype)
        if self.strides is not None:
            stride_y, stride_x = self.strides[k]
        else:
            stride_y, stride_x = img_h / fh, img_w / fw
        cx = ((np.arange(fw, dtype=np.float64) + self.offset) * stride_x).astype(view.dtype)
        cy = ((np.arange(fh, dtype=np.float64) + self.offset) * stride_y).astype(view.dtype)
        _fill_centred(view, cx, cy, half)


class DefaultBoxGenerator(AnchorGrid):
    """SSD default boxes, value for value torchvision's ``DefaultBoxGenerator`` (in float32).

    Level ``k`` has ``K = 2 + 2 * len(aspect_ratios[k])`` shapes, in this order (relative to the image's
    width and height): ``(s_k, s_k)``, ``(s'_k, s'_k)`` with ``s'_k = sqrt(s_k * s_{k+1})``, then
    ``(s_k sqrt(r), s_k / sqrt(r))`` and ``(s_k / sqrt(r), s_k sqrt(r))`` for each ratio ``r``.

    Args:
        aspect_ratios: per level the extra ratios (e.g. ``[[2], [2, 3], ...]``).
        min_ratio, max_ratio: when ``scales`` is None, ``s_k`` is spaced linearly from min to max over the
            levels, with a final 1.0 (a single level: ``[min_ratio, max_ratio]``).
        scales: explicit ``num_levels + 1`` scales.
        steps: per level stride in pixels; the centres are ``(j + 0.5) * step / image`` (relative);
            ``None``: the feature map tiles the image, ``(j + 0.5) / W``.
        clip: clip the relative sizes to [0, 1] (not the boxes).
    """

    def __init__(
        self,
        aspect_ratios: Sequence[Sequence[float]],
        *,
        min_ratio: float = 0.15,
        max_ratio: float = 0.9,
        scales: Sequence[float] | None = None,
        steps: Sequence[float] | None = None,
        clip: bool = True,
    ) -> None:
        num_levels = len(aspect_ratios)
        if num_levels == 0:
            raise ValueError("aspect_ratios must name at least one level")
        if steps is not None and len(steps) != num_levels:
            raise ValueError(
                f"steps has {len(steps)} entries but aspect_ratios has {num_levels} levels; expected {num_levels}"
            )
        if scales is None:
            if num_levels > 1:
                span = max_ratio - min_ratio
                scales = [min_ratio + span * k / (num_levels - 1.0) for k in range(num_levels)] + [1.0]
            else:
                scales = [min_ratio, max_ratio]
        scales = [float(s) for s in scales]
        if len(scales) != num_levels + 1:
            raise ValueError(
                f"scales has {len(scales)} entries but {num_levels} levels need {num_levels + 1} "
                f"(one per level plus the next scale used for the extra square box)"
            )
        cells = []
        for k, ratios in enumerate(aspect_ratios):
            s_k = scales[k]
            s_prime = math.sqrt(scales[k] * scales[k + 1])
            shapes = [(s_k, s_k), (s_prime, s_prime)]
            for r in ratios:
                if r <= 0:
                    raise ValueError(f"level {k}: aspect ratios must be positive, got {r}")
                sq = math.sqrt(r)
                shapes += [(s_k * sq, s_k / sq), (s_k / sq, s_k * sq)]
            cells.append(shapes)
        super().__init__(cells)
        self.aspect_ratios: list[tuple[float, ...]] = [tuple(r) for r in aspect_ratios]
        self.steps: list[float] | None = None if steps is None else [float(s) for s in steps]
        self.scales: list[float] = scales
        self.clip = bool(clip)

    @classmethod
    def ssd300(cls) -> DefaultBoxGenerator:
        """torchvision's ``ssd300_vgg16`` default boxes: 8732 anchors for a 300x300 input."""
        return cls(**SSD300_SETTINGS)

    def __repr__(self) -> str:
        return (
            f"DefaultBoxGenerator(aspect_ratios={self.aspect_ratios}, scales={self.scales}, "
            f"steps={self.steps}, clip={self.clip})"
        )

    def level_strides(self, feature_sizes: Sequence[Any], image_size: Any) -> list[tuple[float, float]]:
        """``(stride_y, stride_x)`` in pixels of every level's centre grid."""
        if self.steps is not None:
            self._feature_sizes(feature_sizes)
            return [(s, s) for s in self.steps]
        return super().level_strides(feature_sizes, image_size)

    def _fill_level(self, k: int, feature: tuple[int, int], image: tuple[int, int], view: np.ndarray) -> None:
        # torchvision's arithmetic, step for step, so float32 results agree to the last bit:
        # centres (j + 0.5) / x_f, sizes clipped to [0, 1], corners (c -/+ 0.5 * size) * image size
        fh, fw = feature
        img_h, img_w = image
        t = view.dtype.type
        x_f = img_w / self.steps[k] if self.steps is not None else fw
        y_f = img_h / self.steps[k] if self.steps is not None else fh
        cx = (np.arange(fw, dtype=view.dtype) + t(0.5)) / t(x_f)
        cy = (np.arange(fh, dtype=view.dtype) + t(0.5)) / t(y_f)
        wh = np.asarray(self._cells[k], dtype=np.float64).astype(view.dtype)
        if self.clip:
            wh = np.clip(wh, t(0), t(1))
        half_w = t(0.5) * wh[:, 0]
        half_h = t(0.5) * wh[:, 1]
        view[..., 0] = ((cx[:, None] - half_w[None, :]) * t(img_w))[None]
        view[..., 2] = ((cx[:, None] + half_w[None, :]) * t(img_w))[None]
        view[..., 1] = ((cy[:, None] - half_h[None, :]) * t(img_h))[:, None]
        view[..., 3] = ((cy[:, None] + half_h[None, :]) * t(img_h))[:, None]


# ---------------------------------------------------------------------------------------------
# Config (plain dataclasses: cvkit.config maps YAML onto them; ops import nothing else from cvkit)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnchorConfig:
    """The ``anchors:`` config section: the anchor generator, the network input it serves, the matcher.

    ``style: ssd`` uses ``aspect_ratios``, ``scales`` (or ``min_ratio``/``max_ratio``), ``steps`` and
    ``clip`` (defaults: torchvision's SSD300). ``style: sizes`` uses ``sizes`` (pixels), ``aspect_ratios``
    (width / height, one list per level or one shared list), ``steps`` as strides and ``offset``.
    ``feature_sizes`` defaults to ``ceil(image_size / step)`` per level.
    """

    style: Literal["ssd", "sizes"] = "ssd"
    image_size: tuple[int, int] = (300, 300)  # network input (height, width) the anchors are made for
    feature_sizes: tuple[tuple[int, int], ...] | None = None  # one (H, W) per level; None: from steps
    aspect_ratios: tuple[tuple[float, ...], ...] = SSD300_SETTINGS["aspect_ratios"]
    scales: tuple[float, ...] | None = SSD300_SETTINGS["scales"]  # style ssd: num_levels + 1 values
    min_ratio: float = 0.15  # style ssd, when scales is null
    max_ratio: float = 0.9
    steps: tuple[float, ...] | None = SSD300_SETTINGS["steps"]  # stride of each level in pixels
    clip: bool = True  # style ssd: clip relative sizes to [0, 1]
    sizes: tuple[tuple[float, ...], ...] | None = None  # style sizes: per level sizes in pixels
    offset: float = 0.5  # style sizes: centre offset in cells
    matcher: MatcherConfig = field(default_factory=MatcherConfig)

    def build(self) -> AnchorGrid:
        """The configured generator: :class:`DefaultBoxGenerator` (``style: ssd``) or :class:`AnchorGenerator`."""
        if self.style == "ssd":
            return DefaultBoxGenerator(
                [list(r) for r in self.aspect_ratios],
                min_ratio=self.min_ratio,
                max_ratio=self.max_ratio,
                scales=self.scales,
                steps=self.steps,
                clip=self.clip,
            )
        if self.sizes is None:
            raise ValueError("anchors.sizes is required when anchors.style is 'sizes'")
        ratios: Any = self.aspect_ratios
        if len(ratios) == 1 and len(self.sizes) > 1:
            ratios = ratios[0]
        return AnchorGenerator(self.sizes, ratios, strides=self.steps, offset=self.offset)

    def resolved_feature_sizes(self) -> list[tuple[int, int]]:
        """``feature_sizes``, or ``ceil(image_size / step)`` per level when it is not given."""
        if self.feature_sizes is not None:
            return [(int(h), int(w)) for h, w in self.feature_sizes]
        if self.steps is None:
            raise ValueError("anchors: give feature_sizes, or steps to derive them from image_size")
        height, width = self.image_size
        return [(math.ceil(height / s), math.ceil(width / s)) for s in self.steps]


# ---------------------------------------------------------------------------------------------
# The d2l book's API ("Dive into Deep Learning", chapter "Anchor Boxes")
# ---------------------------------------------------------------------------------------------

_PRIOR_CACHE = _TensorCache(16)


def multibox_prior(data: Tensor, sizes: Sequence[float], ratios: Sequence[float]) -> Tensor:
    """The d2l book's ``multibox_prior``: anchors centred on every pixel of ``data``'s feature map.

    Args:
        data: NCHW tensor; only its ``(H, W)`` and device are used.
        sizes: relative sizes ``s_1..s_n``. ratios: aspect ratios (width / height) ``r_1..r_m``.

    Returns:
        float32 ``[1, H * W * (n + m - 1), 4]`` normalized xyxy (not clipped). For each pixel ``(i, j)``,
        centred at ``((j + 0.5) / W, (i + 0.5) / H)``, the shapes ``(s_1, r_1) .. (s_n, r_1)`` then
        ``(s_1, r_2) .. (s_1, r_m)`` with width ``s sqrt(r) H / W`` and height ``s / sqrt(r)`` (relative
        to the image width and height). Values equal the book's function; cached like the generator.
    """
    if not isinstance(data, Tensor) or data.dim() < 2:
        raise ValueError("data must be a tensor whose last two dims are (H, W)")
    if not len(sizes) or not len(ratios):
        raise ValueError("sizes and ratios must not be empty")
    in_h, in_w = int(data.shape[-2]), int(data.shape[-1])
    key = (in_h, in_w, tuple(float(s) for s in sizes), tuple(float(r) for r in ratios), str(data.device))
    out = _PRIOR_CACHE.get(key)
    if out is not None:
        return out
    size_t = torch.tensor([float(s) for s in sizes], dtype=torch.float32)
    sqrt_r = torch.sqrt(torch.tensor([float(r) for r in ratios], dtype=torch.float32))
    # widths are scaled by H / W so that a ratio-1 anchor is square in pixels on a non-square image
    widths = torch.cat((size_t * sqrt_r[0], float(sizes[0]) * sqrt_r[1:])) * in_h / in_w
    heights = torch.cat((size_t / sqrt_r[0], float(sizes[0]) / sqrt_r[1:]))
    half = (torch.stack((-widths, -heights, widths, heights), dim=1) / 2).numpy()  # [K, 4]
    # centres (j + 0.5) * (1 / W), (i + 0.5) * (1 / H) in float32, as the book's torch expressions give them
    cx = (np.arange(in_w, dtype=np.float32) + np.float32(0.5)) * np.float32(1.0 / in_w)
    cy = (np.arange(in_h, dtype=np.float32) + np.float32(0.5)) * np.float32(1.0 / in_h)
    grid = np.empty((in_h, in_w, half.shape[0], 4), dtype=np.float32)  # (H, W, K, 4)
    _fill_centred(grid, cx, cy, half)
    out = torch.from_numpy(grid).reshape(1, -1, 4).to(data.device)  # (H, W, K, 4) -> (1, H*W*K, 4)
    _PRIOR_CACHE.put(key, out)
    return out
