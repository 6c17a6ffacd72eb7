"""numba kernels of the augmentation pipeline: the SSD min-IoU crop search and the per-step box filter.

Both replace a dozen numpy calls on arrays of a few boxes, where numpy's per-call cost dominated.
The crop search gets its random numbers drawn beforehand (``uniforms [R, T, 4]``, ``min_ious [R]``); it
walks the rounds and windows in order and stops at the first success, so the result is a pure function
of the draws (the rule is in :mod:`cvkit.transforms.ssd`).
"""

from __future__ import annotations

from typing import Any, NamedTuple, get_type_hints

import numba
import numpy as np

__all__ = [
    "find_crop_window",
    "filter_boxes",
    "crop_boxes",
    "rows_from_boxes",
    "boxes_from_rows",
    "shift_scale_rows",
    "hflip_rows",
    "photometric_affine",
    "photometric_params",
    "zoom_out_params",
    "ssd_sample",
    "ssd_finish",
    "SSDConfig",
    "SSD_CONFIG_DTYPE",
    "SSDDraws",
    "PHOTOMETRIC_DRAWS",
    "ZOOM_OUT_DRAWS",
    "CROP_DRAWS",
    "search_crop_window",
    "splitmix_uniforms",
]


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


_SPLITMIX_STEP = np.uint64(0x9E3779B97F4A7C15)
_SPLITMIX_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_SPLITMIX_MUL2 = np.uint64(0x94D049BB133111EB)
_TWO_53 = 9007199254740992.0


@numba.njit(cache=True, nogil=True)
def _splitmix_next(state: np.uint64) -> tuple[np.uint64, float]:
    """One SplitMix64 step: ``(new state, uniform double in [0, 1) from the top 53 bits)``."""
    state = state + _SPLITMIX_STEP
    z = state
    z = (z ^ (z >> np.uint64(30))) * _SPLITMIX_MUL1
    z = (z ^ (z >> np.uint64(27))) * _SPLITMIX_MUL2
    z = z ^ (z >> np.uint64(31))
    return state, float(z >> np.uint64(11)) / _TWO_53


@numba.njit(cache=True, nogil=True)
def splitmix_uniforms(u: float, count: int) -> np.ndarray:
    """The first ``count`` uniforms of the SplitMix64 stream seeded by the 53 bits of ``u`` in [0, 1)."""
    state = np.uint64(u * _TWO_53)
    out = np.empty(count)
    for i in range(count):
        state, out[i] = _splitmix_next(state)
    return out


@numba.njit(cache=True, nogil=True)
def search_crop_window(
    u: float,
    min_ious: np.ndarray,
    boxes: np.ndarray,
    width: int,
    height: int,
    min_scale: float,
    max_aspect: float,
    trials: int,
    max_rounds: int,
    box_scale_x: float = 1.0,
    box_scale_y: float = 1.0,
) -> tuple[int, int, int, int, int]:
    """The SSD min-IoU crop search from one uniform ``u``: the crop's random numbers are the SplitMix64 stream
    seeded by ``u``'s 53 bits (:func:`splitmix_uniforms`), taken round by round: one to choose the minimum IoU
    (``min_ious[int(v * len(min_ious))]``), then ``4 trials`` windows' ``(u_w, u_h, u_x, u_y)`` for
    :func:`find_crop_window`. Returns the first accepted ``(status, x0, y0, x1, y1)`` (status 1 = window,
    0 = keep the whole image), or ``(-1, 0, 0, width, height)`` after ``max_rounds`` rounds without one.

    One draw from the transform's generator seeds the whole search, however many rounds it takes, so the
    search is one compiled call and consumes a fixed count of the generator's numbers.
    """
    state = np.uint64(u * _TWO_53)
    uniforms = np.empty((1, trials, 4))
    round_iou = np.empty(1)
    choices = min_ious.shape[0]
    for _ in range(max_rounds):
        state, v = _splitmix_next(state)
        round_iou[0] = min_ious[min(int(v * choices), choices - 1)]
        for t in range(trials):
            for j in range(4):
                state, uniforms[0, t, j] = _splitmix_next(state)
        status, x0, y0, x1, y1 = find_crop_window(
            uniforms, round_iou, boxes, width, height, min_scale, max_aspect, box_scale_x, box_scale_y
        )
        if status >= 0:
            return status, x0, y0, x1, y1
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


@numba.njit(cache=True, nogil=True)
def hflip_rows(rows: np.ndarray) -> np.ndarray:
    """A copy of normalized ``rows [N, 4 + k]`` mirrored left-right: ``x1' = 1 - x2``, ``x2' = 1 - x1``
    (albumentations' ``bboxes_hflip``, the same float operations)."""
    out = rows.copy()
    for i in range(rows.shape[0]):
        out[i, 0] = 1.0 - rows[i, 2]
        out[i, 2] = 1.0 - rows[i, 0]
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


#: uniform draws ``PhotometricDistort``, ``ZoomOut`` and ``MinIoURandomCrop`` take from their numpy generator
#: per sample. The counts are fixed (whatever the branches), so a caller can draw the SSD steps' numbers in one
#: block: a PCG64 ``random(a + b)`` gives the same numbers as ``random(a)`` followed by ``random(b)``.
PHOTOMETRIC_DRAWS = 11
ZOOM_OUT_DRAWS = 3
CROP_DRAWS = 1


@numba.njit(cache=True, nogil=True)
def photometric_params(
    u: np.ndarray,
    brightness_lo: float,
    brightness_hi: float,
    contrast_lo: float,
    contrast_hi: float,
    saturation_lo: float,
    saturation_hi: float,
    hue: float,
    channel_shuffle: bool,
    p_each: float,
) -> tuple[float, float, float, float, int, int, int]:
    """``PhotometricDistort``'s parameters from ``u[:PHOTOMETRIC_DRAWS]`` uniforms in [0, 1):
    ``(brightness, contrast, saturation, hue, p0, p1, p2)``.

    Each of brightness, contrast, saturation and hue is drawn with probability ``p_each`` (``u[2k] < p_each``)
    as ``lo + (hi - lo) * u[2k + 1]`` (hue in ``[-hue, hue]``), else neutral; the channels are shuffled with
    probability ``p_each`` (``u[8]``) by a Fisher-Yates pass on ``u[9]``, ``u[10]`` (all six orders equally
    likely, the identity included, as ``torch.randperm``).
    """
    los = (brightness_lo, contrast_lo, saturation_lo, -hue)
    his = (brightness_hi, contrast_hi, saturation_hi, hue)
    neutral = (1.0, 1.0, 1.0, 0.0)
    values = [0.0, 0.0, 0.0, 0.0]
    for k in range(4):
        values[k] = los[k] + (his[k] - los[k]) * u[2 * k + 1] if u[2 * k] < p_each else neutral[k]
    perm = [0, 1, 2]
    if channel_shuffle and u[8] < p_each:
        for i, draw in ((2, u[9]), (1, u[10])):
            j = int(draw * (i + 1))
            perm[i], perm[j] = perm[j], perm[i]
    return values[0], values[1], values[2], values[3], perm[0], perm[1], perm[2]


@numba.njit(cache=True, nogil=True)
def zoom_out_params(u: np.ndarray, width: int, height: int, max_ratio: float) -> tuple[int, int, int, int]:
    """``ZoomOut``'s ``(canvas_h, canvas_w, top, left)`` from ``u[:ZOOM_OUT_DRAWS]`` uniforms in [0, 1):
    ratio ``r = 1 + (max_ratio - 1) u[0]``, canvas ``int(r * size)``, offsets uniform over every position
    (``int(u * (canvas - size + 1))``)."""
    ratio = 1.0 + (max_ratio - 1.0) * u[0]
    canvas_h, canvas_w = int(height * ratio), int(width * ratio)
    top = int(u[1] * (canvas_h - height + 1))
    left = int(u[2] * (canvas_w - width + 1))
    return canvas_h, canvas_w, top, left


@numba.njit(cache=True, nogil=True)
def _count_filter(
    rows: np.ndarray,
    width: int,
    height: int,
    min_size: float,
    min_visibility: float,
    counts: np.ndarray,
    step: int,
    n_before: int,
) -> np.ndarray:
    """The pipeline's clip-and-drop pass on ``rows`` for an image of ``width x height``; adds the clipped and
    dropped numbers to ``counts[step]``."""
    if rows.shape[0]:
        rows, clipped = filter_boxes(rows, width, height, min_size, min_visibility)
        counts[step, 1] += clipped
    counts[step, 2] += n_before - rows.shape[0]
    return rows


class SSDConfig(NamedTuple):
    """The settings of one :func:`ssd_sample` call, by name: the input image's size, which probabilistic steps
    fire, and the parameters of the five steps (cvkit's ``ssd_train`` transforms and the pipeline's box rules).

    Its fields, in this order and with these types, define :data:`SSD_CONFIG_DTYPE`, the record the kernel
    reads them from (``cfg.width``, ...): construct it with keywords (a missing or unknown name raises
    ``TypeError``) and pass :meth:`record`.
    """

    width: int  # input image size, pixels
    height: int
    photometric: bool  # PhotometricDistort fires
    brightness_lo: float
    brightness_hi: float
    contrast_lo: float
    contrast_hi: float
    saturation_lo: float
    saturation_hi: float
    hue: float
    channel_shuffle: bool
    p_each: float  # probability of each photometric step
    zoom_out: bool  # ZoomOut fires
    max_ratio: float
    min_scale: float  # MinIoURandomCrop
    max_aspect: float
    trials: int
    max_rounds: int
    out_width: int  # Resize
    out_height: int
    flip: bool  # HorizontalFlip fires
    min_size: float  # the box rules after every geometric step
    min_visibility: float

    def record(self) -> np.ndarray:
        """This config as a one-element array of :data:`SSD_CONFIG_DTYPE` (what :func:`ssd_sample` takes)."""
        return np.array([self], dtype=SSD_CONFIG_DTYPE)


def _record_dtype(fields: Any) -> np.dtype:
    """The numpy record of a NamedTuple of int, float and bool fields: its names in its order, as int64,
    float64 and bool."""
    hints = get_type_hints(fields)
    numpy_types = {int: np.int64, float: np.float64, bool: np.bool_}
    return np.dtype([(name, numpy_types[hints[name]]) for name in fields._fields])


#: the record :func:`ssd_sample` reads its settings from (field by field, by name): :class:`SSDConfig`'s fields
SSD_CONFIG_DTYPE = _record_dtype(SSDConfig)


class SSDDraws(NamedTuple):
    """What :func:`ssd_sample` drew for one sample, named as the transforms' ``params``: the photometric
    parameters (neutral when the step does not fire), the zoom-out canvas ``(height, width)`` and the image's
    offset on it (the input size and 0, 0 without zoom-out), and the crop window ``(x0, y0, x1, y1)`` on the
    canvas with the search's status (1 window, 0 whole image chosen, -1 none found: the whole canvas)."""

    brightness: float
    contrast: float
    saturation: float
    hue: float
    permutation: tuple[int, int, int]
    canvas: tuple[int, int]
    top: int
    left: int
    crop_status: int
    crop: tuple[int, int, int, int]


@numba.njit(cache=True, nogil=True)
def ssd_sample(
    u: np.ndarray, boxes: np.ndarray, min_ious: np.ndarray, config: np.ndarray, totals: np.ndarray
) -> tuple[SSDDraws, np.ndarray]:
    """:func:`ssd_sample_steps` for xyxy pixel ``boxes [N, 4]``, with its settings in ``config``: one record
    of :data:`SSD_CONFIG_DTYPE` (:meth:`SSDConfig.record`; one argument instead of twenty: numba's per-call
    cost grows with the arguments)."""
    cfg = config[0]
    rows = rows_from_boxes(boxes, cfg.width, cfg.height)
    return ssd_sample_steps(u, rows, cfg, min_ious, totals)


@numba.njit(cache=True, nogil=True)
def ssd_sample_steps(
    u: np.ndarray, rows: np.ndarray, cfg: Any, min_ious: np.ndarray, totals: np.ndarray
) -> tuple[SSDDraws, np.ndarray]:
    """The box side of cvkit's ``ssd_train`` steps (PhotometricDistort -> ZoomOut -> MinIoURandomCrop -> Resize
    -> HorizontalFlip) for one sample in one call, with the draws and arithmetic of running them one by one.

    ``u``: the uniforms of the block (``PHOTOMETRIC_DRAWS`` if ``cfg.photometric`` fires, ``ZOOM_OUT_DRAWS``
    if ``cfg.zoom_out`` fires, then ``CROP_DRAWS`` for the crop search); ``rows [N, 5]`` normalized to
    ``cfg.width x cfg.height``; ``cfg``: a record of :data:`SSD_CONFIG_DTYPE`. Returns ``(draws, rows)``
    (:class:`SSDDraws`, the rows left after the flip). The statistics of the six steps (the input and the five
    transforms) are added to ``totals [6]``, a record array with int fields ``calls`` (samples), ``applied``,
    ``boxes_in``, ``clipped`` and ``dropped`` (:class:`cvkit.transforms.pipeline.StepStats`' names).
    """
    if totals.shape[0] < 6:
        raise ValueError("totals needs six rows: the input and the five steps")
    width, height, min_size, min_visibility = cfg.width, cfg.height, cfg.min_size, cfg.min_visibility
    counts = np.zeros((6, 3), dtype=np.int64)
    counts[0, 0] = rows.shape[0]
    rows = _count_filter(rows, width, height, min_size, min_visibility, counts, 0, rows.shape[0])
    k = 0
    brightness, contrast, saturation, hue, p0, p1, p2 = 1.0, 1.0, 1.0, 0.0, 0, 1, 2
    counts[1, 0] = rows.shape[0]
    if cfg.photometric:
        brightness, contrast, saturation, hue, p0, p1, p2 = photometric_params(
            u[k:], cfg.brightness_lo, cfg.brightness_hi, cfg.contrast_lo, cfg.contrast_hi, cfg.saturation_lo,
            cfg.saturation_hi, cfg.hue, cfg.channel_shuffle, cfg.p_each,
        )
        k += PHOTOMETRIC_DRAWS
    canvas_h, canvas_w, top, left = height, width, 0, 0
    counts[2, 0] = rows.shape[0]
    if cfg.zoom_out:
        canvas_h, canvas_w, top, left = zoom_out_params(u[k:], width, height, cfg.max_ratio)
        k += ZOOM_OUT_DRAWS
        if rows.shape[0]:
            rows = shift_scale_rows(rows, width / canvas_w, left / canvas_w, height / canvas_h, top / canvas_h)
    status, x0, y0, x1, y1 = search_crop_window(
        u[k],
        min_ious,
        rows,
        canvas_w,
        canvas_h,
        cfg.min_scale,
        cfg.max_aspect,
        cfg.trials,
        cfg.max_rounds,
        float(canvas_w),
        float(canvas_h),
    )
    if status < 0:  # no window accepted: keep the whole image
        x0, y0, x1, y1 = 0, 0, canvas_w, canvas_h
    rows = ssd_finish(rows, canvas_w, canvas_h, x0, y0, x1, y1, cfg.out_width, cfg.out_height, cfg.flip, min_size,
                      min_visibility, counts)
    applied = (False, cfg.photometric, cfg.zoom_out, True, True, cfg.flip)
    for step in range(6):
        totals[step].calls += 1
        totals[step].applied += applied[step]
        totals[step].boxes_in += counts[step, 0]
        totals[step].clipped += counts[step, 1]
        totals[step].dropped += counts[step, 2]
    draws = SSDDraws(
        brightness=brightness, contrast=contrast, saturation=saturation, hue=hue, permutation=(p0, p1, p2),
        canvas=(canvas_h, canvas_w), top=top, left=left, crop_status=status, crop=(x0, y0, x1, y1),
    )
    return draws, rows


@numba.njit(cache=True, nogil=True)
def ssd_finish(
    rows: np.ndarray,
    canvas_w: int,
    canvas_h: int,
    x0: int,
    y0: int,
    x1: int,
    y1: int,
    out_width: int,
    out_height: int,
    flip: bool,
    min_size: float,
    min_visibility: float,
    counts: np.ndarray,
) -> np.ndarray:
    """The crop window ``(x0, y0, x1, y1)`` of the ``canvas_w x canvas_h`` image applied to ``rows``, then the
    resize to ``out_width x out_height`` and the flip (see :func:`ssd_sample_steps`); fills ``counts[3:]``."""
    n_before = rows.shape[0]
    counts[3, 0] = n_before
    if n_before:
        rows = crop_boxes(rows, canvas_w, canvas_h, x0, y0, x1, y1)
        rows = _count_filter(rows, x1 - x0, y1 - y0, min_size, min_visibility, counts, 3, n_before)
    counts[4, 0] = rows.shape[0]
    if rows.shape[0]:
        rows = _count_filter(rows, out_width, out_height, min_size, min_visibility, counts, 4, rows.shape[0])
    counts[5, 0] = rows.shape[0]
    if flip and rows.shape[0]:
        rows = hflip_rows(rows)
    return rows
