"""Mosaic: four training images tiled around a random centre into one, their boxes following (YOLOv4 style).

A mosaic sample is made *before* the per-sample augmentation (``ssd_train``'s crop, resize and flip run on it
as on any image). Steps, for an output canvas of ``size = (height, width)``:

1. each of the four images is resized so that its long side is ``max(size)`` (kept when it already is);
2. the centre ``(cx, cy)`` is drawn uniformly in the middle half of the canvas (``[w/4, 3w/4] x [h/4, 3h/4]``);
3. image 0 is placed with its bottom-right corner at the centre (top-left quadrant), image 1 with its
   bottom-left corner (top-right), image 2 with its top-right corner (bottom-left), image 3 with its top-left
   corner (bottom-right); each is cut to its quadrant, so objects keep the size they had after step 1;
   what no image covers is ``fill``;
4. boxes move with their image, are clipped to its quadrant, and are dropped when narrower or shorter than
   ``min_box_size`` pixels or when less than ``min_visibility`` of their area (after step 1) is left.

Boxes are xyxy float32 absolute pixels (cvkit's convention); labels stay aligned with them. The other keys of
the result (``image_id``, ``file_name``, ...) are those of the first sample. :func:`mosaic_draws` samples
the random parameters from a NumPy generator, :func:`mosaic4` applies them deterministically.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import cv2
import numpy as np
import torch

__all__ = ["Mosaic", "MosaicDraws", "mosaic_draws", "mosaic4"]


class MosaicDraws(NamedTuple):
    """The random part of one mosaic."""

    others: tuple[int, int, int]  # dataset indices of images 1..3 (image 0 is the sample asked for)
    center: tuple[float, float]  # (cx, cy) in [0, 1] units of the canvas


def mosaic_draws(rng: np.random.Generator, num_samples: int) -> MosaicDraws:
    """Three other sample indices (uniform over the dataset, repeats allowed) and the centre."""
    others = rng.integers(0, num_samples, size=3)
    cx, cy = rng.uniform(0.25, 0.75, size=2)
    return MosaicDraws((int(others[0]), int(others[1]), int(others[2])), (float(cx), float(cy)))


def _fit_long_side(image: np.ndarray, boxes: np.ndarray, long_side: int) -> tuple[np.ndarray, np.ndarray]:
    height, width = image.shape[:2]
    scale = long_side / max(height, width)
    if scale == 1.0:
        return image, boxes
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    factor = np.array([new_w / width, new_h / height, new_w / width, new_h / height], dtype=np.float32)
    return resized, boxes * factor


def mosaic4(
    samples: Sequence[dict[str, Any]],
    size: tuple[int, int],
    center: tuple[float, float],
    fill: Sequence[int] = (124, 116, 104),
    min_box_size: float = 1.0,
    min_visibility: float = 0.0,
) -> dict[str, Any]:
    """Tile four samples (``image`` uint8 ``(H, W, 3)``, ``boxes`` float32 ``[M, 4]``, ``labels`` int64 ``[M]``)
    into one ``size`` canvas around ``center`` (see the module docstring)."""
    if len(samples) != 4:
        raise ValueError(f"mosaic4 takes 4 samples, got {len(samples)}")
    out_h, out_w = int(size[0]), int(size[1])
    cx = int(round(center[0] * out_w))
    cy = int(round(center[1] * out_h))
    canvas = np.empty((out_h, out_w, 3), dtype=np.uint8)
    canvas[:] = np.asarray(fill, dtype=np.uint8)
    all_boxes, all_labels = [], []
    for k, sample in enumerate(samples):
        image = np.asarray(sample["image"])
        boxes = torch.as_tensor(sample["boxes"], dtype=torch.float32).reshape(-1, 4).numpy()
        labels = torch.as_tensor(sample["labels"], dtype=torch.int64).reshape(-1)
        image, boxes = _fit_long_side(image, boxes, max(out_h, out_w))
        h, w = image.shape[:2]
        # the image's offset on the canvas: the corner that touches the centre
        ox = cx - w if k in (0, 2) else cx
        oy = cy - h if k in (0, 1) else cy
        # the quadrant it may fill
        qx0, qx1 = (0, cx) if k in (0, 2) else (cx, out_w)
        qy0, qy1 = (0, cy) if k in (0, 1) else (cy, out_h)
        x0, x1 = max(qx0, ox), min(qx1, ox + w)
        y0, y1 = max(qy0, oy), min(qy1, oy + h)
        if x1 <= x0 or y1 <= y0:
            continue
        canvas[y0:y1, x0:x1] = image[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
        if len(boxes) == 0:
            continue
        moved = boxes + np.array([ox, oy, ox, oy], dtype=np.float32)
        area = (moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1])
        clipped = np.stack([np.clip(moved[:, 0], x0, x1), np.clip(moved[:, 1], y0, y1),
                            np.clip(moved[:, 2], x0, x1), np.clip(moved[:, 3], y0, y1)], axis=1)
        bw, bh = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
        keep = (bw >= min_box_size) & (bh >= min_box_size) & (bw > 0) & (bh > 0)
        keep &= bw * bh >= min_visibility * area
        all_boxes.append(clipped[keep])
        all_labels.append(labels[torch.from_numpy(keep)])
    result = {k: v for k, v in samples[0].items() if k not in ("image", "boxes", "labels")}
    result["image"] = canvas
    result["orig_size"] = (out_h, out_w)
    result["boxes"] = torch.from_numpy(np.concatenate(all_boxes).astype(np.float32)) if all_boxes \
        else torch.zeros((0, 4), dtype=torch.float32)
    result["labels"] = torch.cat(all_labels) if all_labels else torch.zeros((0,), dtype=torch.int64)
    return result


_STREAM = 0x6D6F736169  # "mosai": the mosaic's draws come from their own stream of the sample's seed


class Mosaic(NamedTuple):
    """When and how :class:`cvkit.data.loader.AugmentedDataset` makes mosaic samples.

    ``p``: probability that a training sample becomes a mosaic; ``until``: the fraction of the run (budget or
    epochs) after which no more mosaics are made (the last part trains on plain images, as the evaluation
    sees them); ``size``, ``fill``, ``min_box_size``, ``min_visibility``: as in :func:`mosaic4`.
    """

    p: float
    until: float
    size: tuple[int, int]
    fill: tuple[int, int, int]
    min_box_size: float = 1.0
    min_visibility: float = 0.0

    def maybe_apply(self, sample: dict[str, Any], seed: int, fetch: Any, num_samples: int) -> dict[str, Any]:
        """``sample``, or with probability ``p`` a mosaic of it and three samples ``fetch(index)`` returns
        (a ``None`` among them, a sample the dataset skipped, keeps ``sample`` as it is)."""
        rng = np.random.default_rng([seed & 0xFFFFFFFFFFFFFFFF, _STREAM])
        if self.p <= 0 or rng.random() >= self.p:
            return sample
        draws = mosaic_draws(rng, num_samples)
        others = [fetch(i) for i in draws.others]
        if any(o is None for o in others):
            return sample
        return mosaic4([sample, *others], self.size, draws.center, self.fill, self.min_box_size, self.min_visibility)
