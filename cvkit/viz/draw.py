"""Draw boxes on images, tile images into a grid, save them as PNG.

Images are RGB uint8 ``(H, W, 3)`` numpy arrays; boxes are xyxy in continuous pixel coordinates (a box
``[x1, y1, x2, y2]`` covers the pixels ``floor(x1) .. ceil(x2) - 1``). Every function returns a new
array and leaves its inputs untouched.
"""

from __future__ import annotations

import colorsys
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from cvkit._arrays import as_numpy as _as_numpy

__all__ = ["color_for", "draw_boxes", "to_uint8_image", "make_grid", "save_image", "fit_image", "caption_image",
           "comparison_grid"]


def color_for(label: int) -> tuple[int, int, int]:
    """A distinct, deterministic RGB colour for a class label (golden-ratio hue steps)."""
    hue = (int(label) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(255 * r), int(255 * g), int(255 * b)


def draw_boxes(
    image: np.ndarray,
    boxes: object,
    labels: object | None = None,
    class_names: Sequence[str] | None = None,
    scores: object | None = None,
    thickness: int = 1,
    font_scale: float = 0.35,
) -> np.ndarray:
    """A copy of ``image`` with ``boxes [M, 4]`` drawn, coloured by label, captioned ``name score``.

    With ``scores`` the boxes are drawn from the lowest score to the highest, so that where detections
    overlap (a box found twice with two classes) the best one's box and caption are on top."""
    out = np.ascontiguousarray(image, dtype=np.uint8).copy()
    boxes_np = _as_numpy(boxes, np.float64).reshape(-1, 4)
    labels_np = np.zeros(len(boxes_np), np.int64) if labels is None else _as_numpy(labels, np.int64).reshape(-1)
    scores_np = None if scores is None else _as_numpy(scores, np.float64).reshape(-1)
    height, width = out.shape[:2]
    order = range(len(boxes_np)) if scores_np is None else np.argsort(scores_np, kind="stable")
    for i in order:
        x1, y1, x2, y2 = boxes_np[i]
        if not np.isfinite([x1, y1, x2, y2]).all():
            continue
        p1 = (int(np.clip(np.floor(x1), 0, width - 1)), int(np.clip(np.floor(y1), 0, height - 1)))
        p2 = (int(np.clip(np.ceil(x2) - 1, 0, width - 1)), int(np.clip(np.ceil(y2) - 1, 0, height - 1)))
        color = color_for(labels_np[i])
        cv2.rectangle(out, p1, p2, color, thickness, cv2.LINE_8)
        caption = ""
        if class_names is not None and 0 <= labels_np[i] < len(class_names):
            caption = str(class_names[labels_np[i]])
        elif labels is not None:
            caption = str(int(labels_np[i]))
        if scores_np is not None:
            caption = f"{caption} {scores_np[i]:.2f}".strip()
        if caption:
            (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
            ty = p1[1] - 2 if p1[1] - th - base - 2 >= 0 else p1[1] + th + 2
            cv2.rectangle(out, (p1[0], ty - th - 1), (p1[0] + tw + 1, ty + base - 1), color, -1)
            cv2.putText(
                out, caption, (p1[0] + 1, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1, cv2.LINE_AA
            )
    return out


def to_uint8_image(image: object) -> np.ndarray:
    """An RGB uint8 ``(H, W, 3)`` view of a pipeline output (pipelines never normalize: see
    :mod:`cvkit.models.preprocess`).

    A uint8 ``(3, H, W)`` tensor (a preset's output) is transposed; a uint8 ``(H, W, 3)`` array is returned as
    is; a float ``(3, H, W)`` tensor is taken as 0..1 (0..255 when its maximum exceeds 1.5), rounded and
    clipped.
    """
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        return image
    if isinstance(image, torch.Tensor) and image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == 3:
        return image.detach().cpu().permute(1, 2, 0).contiguous().numpy()
    tensor = torch.as_tensor(image).detach().cpu().float()
    if tensor.ndim != 3 or tensor.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) tensor or an (H, W, 3) uint8 array, got shape {tuple(tensor.shape)}")
    if tensor.max() > 1.5:  # already in 0..255
        tensor = tensor / 255.0
    return (tensor.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).contiguous().numpy()


def make_grid(images: Sequence[np.ndarray], cols: int = 4, pad: int = 4, pad_value: int = 255) -> np.ndarray:
    """Tile RGB uint8 images row by row (``cols`` per row) with ``pad`` pixels between them."""
    if not images:
        raise ValueError("make_grid needs at least one image")
    cols = max(1, min(cols, len(images)))
    rows = (len(images) + cols - 1) // cols
    cell_h = max(im.shape[0] for im in images)
    cell_w = max(im.shape[1] for im in images)
    grid = np.full((rows * cell_h + (rows + 1) * pad, cols * cell_w + (cols + 1) * pad, 3), pad_value, np.uint8)
    for k, im in enumerate(images):
        r, c = divmod(k, cols)
        y, x = pad + r * (cell_h + pad), pad + c * (cell_w + pad)
        grid[y : y + im.shape[0], x : x + im.shape[1]] = im
    return grid


def fit_image(image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """``image`` resized (aspect kept) so that its longer side is ``size``, and the scale applied (boxes in the
    original pixels times the scale are boxes in the result)."""
    height, width = image.shape[:2]
    scale = size / max(height, width, 1)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image), new_size, interpolation=interpolation), scale


def caption_image(image: np.ndarray, text: str, height: int = 16, font_scale: float = 0.4) -> np.ndarray:
    """``image`` with a white band of ``height`` pixels on top holding ``text`` in black."""
    band = np.full((height, image.shape[1], 3), 255, np.uint8)
    cv2.putText(band, text, (3, height - 4), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([band, image], axis=0)


def comparison_grid(
    images: Sequence[np.ndarray],
    ground_truths: Sequence[tuple[object, object]],
    predictions: Sequence[tuple[object, object, object]],
    class_names: Sequence[str] | None = None,
    score_thresh: float = 0.0,
    cell_size: int = 256,
    pairs_per_row: int = 2,
    titles: Sequence[str] | None = None,
) -> np.ndarray:
    """Ground truth and predictions side by side for each image, ``pairs_per_row`` pairs to a grid row.

    ``images[i]`` RGB uint8 ``(H, W, 3)`` in the pixels of its ``ground_truths[i] = (boxes [M, 4], labels [M])``
    and ``predictions[i] = (boxes [N, 4], scores [N], labels [N])``; each is resized to ``cell_size`` on its
    longer side. Predictions below ``score_thresh`` are not drawn. Each cell is captioned (``titles[i]`` or
    the image's index) with its box count.
    """
    if not images:
        raise ValueError("comparison_grid needs at least one image")
    cells = []
    for i, image in enumerate(images):
        small, scale = fit_image(image, cell_size)
        gt_boxes, gt_labels = ground_truths[i]
        boxes, scores, labels = (_as_numpy(v, np.float64 if k < 2 else np.int64) for k, v in enumerate(predictions[i]))
        keep = scores.reshape(-1) >= score_thresh
        gt = draw_boxes(small, _as_numpy(gt_boxes, np.float64).reshape(-1, 4) * scale, gt_labels, class_names)
        pred = draw_boxes(small, boxes.reshape(-1, 4)[keep] * scale, labels.reshape(-1)[keep], class_names,
                          scores.reshape(-1)[keep])
        name = titles[i] if titles is not None else f"#{i}"
        num_gt = len(_as_numpy(gt_boxes, np.float64).reshape(-1, 4))
        pair = make_grid([caption_image(gt, f"{name}: ground truth ({num_gt})"),
                          caption_image(pred, f"predicted, score >= {score_thresh:g} ({int(keep.sum())})")],
                         cols=2, pad=2)
        cells.append(pair)
    return make_grid(cells, cols=max(1, pairs_per_row), pad=12, pad_value=160)


def save_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write an RGB uint8 image (PNG, JPEG ... by extension), creating parent folders; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write image {path}")
    return path
