"""Collate functions: variable numbers of boxes per image, skipped (``None``) samples dropped.

Detection batch (``collate_detection``)::

    images      uint8 Tensor (B, 3, H, W) when every image has the same shape, else a list of (3, H_i, W_i);
                images from cvkit pipelines are channel-last views (no transposition in the worker); the
                model normalizes them (cvkit.models.preprocess)
    targets     list of B dicts {"boxes": float32 [M_i, 4] xyxy in the batch image's pixels, "labels": int64 [M_i]}
    image_ids   int64 [B]
    orig_sizes  int64 [B, 2]   (height, width) of the decoded files, to map boxes back
    file_names  list of B str
    num_skipped int            samples dropped: bad input under on_error="skip" (``Skipped`` or ``None``)
    skipped_kinds dict         {kind: count} of the problems those samples had (``DataError`` kinds)

Classification batch (``collate_classification``): ``images`` (B, 3, H, W), ``labels`` int64 [B],
``file_names``, ``num_skipped``, ``skipped_kinds``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["collate_detection", "collate_classification", "Skipped"]


@dataclass(frozen=True)
class Skipped:
    """A sample dropped under ``on_error="skip"`` (in a DataLoader worker), with its problems per kind."""

    kinds: tuple[tuple[str, int], ...] = ()


def _skipped(samples: Sequence[Any]) -> tuple[list[dict[str, Any]], int, dict[str, int]]:
    kept = [s for s in samples if isinstance(s, dict)]
    kinds: Counter = Counter()
    for s in samples:
        if isinstance(s, Skipped):
            kinds.update(dict(s.kinds) or {"unknown": 1})
        elif s is None:
            kinds["unknown"] += 1
    return kept, len(samples) - len(kept), dict(kinds)


def _as_tensor_image(image: Any) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        return image
    # an untransformed sample: (H, W, 3) uint8 -> (3, H, W) uint8 (a channel-last view)
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)


def _stack_or_list(images: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    if not images or any(im.shape != images[0].shape for im in images):
        return images
    whole = _whole_buffer(images)
    if whole is not None:
        return whole
    if images[0].ndim == 3 and all(im.stride() == _channel_last_strides(im) for im in images):
        # channel-last views of (H, W, C) pixels (cvkit pipelines): stack the pixels as they lie, no transposition;
        # the batch is a (B, C, H, W) view of a (B, H, W, C) buffer (the model's normalizer outputs the standard
        # layout)
        return torch.stack([im.permute(1, 2, 0) for im in images]).permute(0, 3, 1, 2)
    return torch.stack(images)


def _whole_buffer(images: list[torch.Tensor]) -> torch.Tensor | None:
    """The ``(B, C, H, W)`` view of the batch buffer when ``images`` are its slots 0..B-1 in order and fill it
    (:meth:`cvkit.data.AugmentedDataset.__getitems__` renders them there), else ``None``."""
    first = images[0]
    if first.ndim != 3 or first.stride() != _channel_last_strides(first):
        return None
    numel = first.numel()
    storage = first.untyped_storage()
    if storage.nbytes() != len(images) * numel * first.element_size():
        return None
    pointer = storage.data_ptr()
    for k, image in enumerate(images):
        if (image.untyped_storage().data_ptr() != pointer or image.storage_offset() != k * numel
                or image.stride() != first.stride() or image.dtype != first.dtype):
            return None
    channels, height, width = first.shape
    return first.as_strided((len(images), channels, height, width), (numel, 1, width * channels, channels), 0)


def _channel_last_strides(image: torch.Tensor) -> tuple[int, int, int]:
    """The strides of a contiguous ``(H, W, C)`` buffer seen as ``(C, H, W)``."""
    channels, _, width = image.shape
    return (1, width * channels, channels)


def collate_detection(samples: Sequence[dict[str, Any] | Skipped | None]) -> dict[str, Any]:
    """Batch detection samples (see the module docstring); skipped samples are dropped and counted."""
    kept, num_skipped, kinds = _skipped(samples)
    images = [_as_tensor_image(s["image"]) for s in kept]
    return {
        "images": _stack_or_list(images) if images else torch.empty((0, 3, 0, 0)),
        "targets": [
            {
                "boxes": torch.as_tensor(s["boxes"], dtype=torch.float32).reshape(-1, 4),
                "labels": torch.as_tensor(s["labels"], dtype=torch.int64).reshape(-1),
            }
            for s in kept
        ],
        "image_ids": torch.tensor([int(s["image_id"]) for s in kept], dtype=torch.int64),
        "orig_sizes": torch.tensor([list(s["orig_size"]) for s in kept], dtype=torch.int64).reshape(-1, 2),
        "file_names": [s["file_name"] for s in kept],
        "num_skipped": num_skipped,
        "skipped_kinds": kinds,
    }


def collate_classification(samples: Sequence[dict[str, Any] | Skipped | None]) -> dict[str, Any]:
    """Batch classification samples; skipped samples are dropped and counted."""
    kept, num_skipped, kinds = _skipped(samples)
    images = [_as_tensor_image(s["image"]) for s in kept]
    return {
        "images": _stack_or_list(images) if images else torch.empty((0, 3, 0, 0)),
        "labels": torch.tensor([int(s["label"]) for s in kept], dtype=torch.int64),
        "file_names": [s["file_name"] for s in kept],
        "num_skipped": num_skipped,
        "skipped_kinds": kinds,
    }
