"""The detection dataset shared by every reader, its sample layout, and the annotation listing.

A reader (COCO, VOC, YOLO, synthetic) parses its files once into :class:`ImageRecord` s (boxes already
validated, converted and clipped) and hands them to :class:`DetectionDataset`, which decodes an image
only when a sample is asked for.

Sample (``dataset[i]``), the same for every reader::

    image      np.uint8 (H, W, 3)    RGB pixels
    boxes      torch.float32 [M, 4]  xyxy, absolute pixels of ``image`` (continuous, no +1)
    labels     torch.int64 [M]       in 0..num_classes-1 (``dataset.class_names[label]``)
    image_id   int                   COCO: the file's image id; VOC/YOLO: the position in the split
    orig_size  (int, int)            (height, width) of the decoded file
    file_name  str                   path relative to the dataset root
    class_names tuple[str, ...]      the dataset's class names (the same tuple as ``dataset.class_names``)

Images without boxes are kept (M = 0: negatives). Under ``on_error="skip"`` a sample whose image cannot
be decoded (or whose size differs from the annotated one) comes back as ``None`` and is counted in
``dataset.report``; :func:`cvkit.data.collate.collate_detection` drops it.

Listing annotations without decoding any image: ``dataset.annotations()`` yields one
:class:`ImageAnnotation` ``(image_id, file_name, size, boxes, labels)`` per image, with ``size`` the
``(height, width)`` the boxes refer to, ``boxes`` float32 ``[M, 4]`` xyxy absolute and ``labels`` int64
``[M]`` as torch tensors (fresh copies).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from cvkit.data.errors import DataError, DataReport
from cvkit.data.io import read_image

__all__ = ["ImageRecord", "ImageAnnotation", "DetectionDataset", "check_boxes"]


@dataclass(frozen=True)
class ImageRecord:
    """One parsed image: where it is, its size, and its validated boxes."""

    image_id: int
    file_name: str  # relative to the dataset root, as written in the annotations
    path: Path  # resolved, checked to lie inside the root
    size: tuple[int, int]  # (height, width) the boxes refer to
    boxes: np.ndarray  # float32 [M, 4] xyxy absolute, clipped to ``size``
    labels: np.ndarray  # int64 [M]


class ImageAnnotation(NamedTuple):
    image_id: int
    file_name: str
    size: tuple[int, int]  # (height, width)
    boxes: torch.Tensor  # float32 [M, 4] xyxy absolute
    labels: torch.Tensor  # int64 [M]


def check_boxes(
    boxes: np.ndarray,
    size: tuple[int, int],
    source: object,
    wheres: Sequence[str],
    report: DataReport,
) -> tuple[np.ndarray, np.ndarray]:
    """Validate xyxy ``boxes [M, 4]`` against an image of ``size = (height, width)``.

    Returns ``(clipped_boxes float32 [M, 4], keep bool [M])``. A box with a non-finite coordinate or
    ``x2 <= x1`` / ``y2 <= y1`` is a ``bad_box``; a box that has no area left after clipping to the image
    is ``box_outside``; each goes through ``report.handle`` (raise, or count and drop). A box partly outside
    is clipped and noted as ``clipped``.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    height, width = size
    keep = np.ones(len(boxes), dtype=bool)
    finite = np.asarray(np.isfinite(boxes).all(axis=1), dtype=bool)
    positive = finite & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    clipped = boxes.copy()
    clipped[:, 0::2] = np.clip(clipped[:, 0::2], 0, width)
    clipped[:, 1::2] = np.clip(clipped[:, 1::2], 0, height)
    inside = positive & (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    for i in np.flatnonzero(~inside).tolist():
        if not finite[i]:
            err = DataError("bad_box", source, f"box {boxes[i].tolist()} has a NaN or infinite coordinate", wheres[i])
        elif not positive[i]:
            err = DataError("bad_box", source, f"box {boxes[i].tolist()} has a non-positive width or height", wheres[i])
        else:
            err = DataError(
                "box_outside",
                source,
                f"box {boxes[i].tolist()} lies entirely outside the {width}x{height} image",
                wheres[i],
            )
        report.handle(err)
        keep[i] = False
    was_clipped = inside & (clipped != boxes).any(axis=1)
    report.note("clipped", int(was_clipped.sum()))
    return clipped.astype(np.float32), keep


class DetectionDataset(Dataset):
    """Images plus validated boxes; decodes on ``__getitem__`` (see the module docstring for the sample).

    ``category_ids`` (COCO only) maps a label back to the file's category id:
    ``category_ids[label]``; see :mod:`cvkit.data.coco` for the rule.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        class_names: Sequence[str],
        root: Path,
        report: DataReport,
        category_ids: Sequence[int] | None = None,
        name: str = "dataset",
    ):
        self.records = list(records)
        self.class_names = tuple(class_names)
        self.root = Path(root)
        self.report = report
        self.category_ids = None if category_ids is None else tuple(int(c) for c in category_ids)
        self.name = name

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, images={len(self)}, classes={self.num_classes}, "
            f"root={str(self.root)!r})"
        )

    def load_image(self, index: int) -> np.ndarray:
        """Decode image ``index``; raises :class:`DataError` if it is bad or not the annotated size."""
        rec = self.records[index]
        image = read_image(rec.path)
        if tuple(image.shape[:2]) != rec.size:
            hint = " (EXIF orientation?)" if tuple(image.shape[1::-1]) == rec.size else ""
            raise DataError(
                "size_mismatch",
                rec.path,
                f"decoded size (h, w) = {tuple(image.shape[:2])} differs from the annotated {rec.size}{hint}",
            )
        return image

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        rec = self.records[index]
        try:
            image = self.load_image(index)
        except DataError as err:
            self.report.handle(err)  # raises under on_error="raise"
            return None
        return {
            "image": image,
            "boxes": torch.from_numpy(rec.boxes.copy()),
            "labels": torch.from_numpy(rec.labels.copy()),
            "image_id": rec.image_id,
            "orig_size": rec.size,
            "file_name": rec.file_name,
            "class_names": self.class_names,
        }

    def annotations(self) -> Iterator[ImageAnnotation]:
        """Yield every image's size, boxes and labels without decoding any image."""
        for rec in self.records:
            yield ImageAnnotation(
                rec.image_id,
                rec.file_name,
                rec.size,
                torch.from_numpy(rec.boxes.copy()),
                torch.from_numpy(rec.labels.copy()),
            )

    def validate_images(self, progress: bool = False, drop_bad: bool = True) -> int:
        """Decode every image once; returns how many are bad (each goes through ``report.handle``).

        Under ``on_error="skip"`` and ``drop_bad``, bad images are removed from the dataset, so later
        epochs never meet them.
        """
        from tqdm import tqdm

        bad: list[int] = []
        indices = tqdm(range(len(self)), desc=f"decoding {self.name}", unit="img", disable=not progress)
        for index in indices:
            try:
                self.load_image(index)
            except DataError as err:
                self.report.handle(err)
                bad.append(index)
        if drop_bad and bad:
            dropped = set(bad)
            self.records = [r for i, r in enumerate(self.records) if i not in dropped]
        return len(bad)
