"""COCO JSON detection reader.

Category ids -> labels (the one rule, used for every COCO file): the declared categories are sorted by
``id`` and ``label = position in that order``, so labels are ``0..num_classes-1`` whatever the ids are
(COCO 2017's ids 1..90 with gaps become 0..79). ``dataset.category_ids[label]`` gives the id back for
writing predictions in the file's ids; ``dataset.class_names[label]`` is the category's ``name``.

Boxes: COCO ``bbox = [x, y, width, height]`` in absolute pixels is converted once on load with
``box_convert(..., "xywh", "xyxy")``, then validated against the image's ``width``/``height`` (or the
file's header when the image entry has no size): NaN/inf or a non-positive width/height is a ``bad_box``,
a box entirely outside the image ``box_outside``, a box partly outside is clipped (note ``clipped``).
``iscrowd=1`` annotations are not used as boxes (note ``crowd_ignored``). Images without annotations are
kept as negatives. Problems go through the ``on_error`` policy (see :mod:`cvkit.data.errors`); a file that is
not a JSON object with ``images`` and ``categories`` lists always raises (there is nothing to skip to).

Listing annotations without decoding: ``CocoDetection(...).annotations()`` (see :mod:`cvkit.data.dataset`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cvkit.data.dataset import DetectionDataset, ImageRecord, check_boxes
from cvkit.data.errors import DataError, DataReport, OnError
from cvkit.data.io import read_image_size, resolve_root, safe_join
from cvkit.ops.boxes import box_convert

__all__ = ["CocoDetection", "parse_coco", "CocoIndex", "CocoImage"]

_INT64_MAX = 2**63 - 1


@dataclass
class CocoImage:
    image_id: int
    file_name: str
    size: tuple[int, int] | None  # (height, width) from the JSON, None when absent
    boxes: list[list[float]] = field(default_factory=list)  # xyxy absolute, unclipped until checked
    labels: list[int] = field(default_factory=list)
    wheres: list[str] = field(default_factory=list)
    checked: bool = False  # boxes validated against ``size`` (possible only when size is known)


@dataclass
class CocoIndex:
    category_ids: tuple[int, ...]  # label -> category id (sorted ids)
    class_names: tuple[str, ...]
    images: list[CocoImage]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -_INT64_MAX <= value <= _INT64_MAX


def _is_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _load_json(data: bytes, source: object) -> dict:
    try:
        obj = json.loads(data)
    except json.JSONDecodeError as exc:
        raise DataError(
            "malformed", source, f"invalid JSON: {exc.msg}", f"line {exc.lineno} column {exc.colno}"
        ) from None
    except (ValueError, RecursionError, TypeError) as exc:  # bad encoding, nesting too deep
        raise DataError("malformed", source, f"invalid JSON ({type(exc).__name__}: {str(exc)[:80]})") from None
    if not isinstance(obj, dict):
        raise DataError("malformed", source, f"top level must be a JSON object, got {type(obj).__name__}")
    return obj


def parse_coco(data: bytes, source: object, report: DataReport) -> CocoIndex:
    """Parse COCO detection JSON bytes into a :class:`CocoIndex`; only :class:`DataError` comes out.

    Boxes of images with a declared size are validated here (``checked=True``); the others are validated
    once the size is read from the image header (:class:`CocoDetection` does that).
    """
    obj = _load_json(data, source)
    lists = {}
    for key, required in (("images", True), ("categories", True), ("annotations", False)):
        value = obj.get(key, None if required else [])
        if not isinstance(value, list):
            what = "missing" if value is None else f"a {type(value).__name__}"
            raise DataError("malformed", source, f"'{key}' must be a list, but it is {what}")
        lists[key] = value

    names_by_id: dict[int, str] = {}
    for i, cat in enumerate(lists["categories"]):
        where = f"categories[{i}]"
        if not isinstance(cat, dict) or not _is_int(cat.get("id")) or not isinstance(cat.get("name"), str):
            report.handle(DataError("malformed", source, "a category needs an integer 'id' and a string 'name'", where))
            continue
        if cat["id"] in names_by_id:
            report.handle(DataError("duplicate_id", source, f"category id {cat['id']} is declared twice", where))
            continue
        names_by_id[cat["id"]] = cat["name"]
    category_ids = tuple(sorted(names_by_id))
    label_of = {cid: label for label, cid in enumerate(category_ids)}

    images: dict[int, CocoImage] = {}
    for i, im in enumerate(lists["images"]):
        where = f"images[{i}]"
        if not isinstance(im, dict) or not _is_int(im.get("id")) or not isinstance(im.get("file_name"), str):
            report.handle(
                DataError("malformed", source, "an image needs an integer 'id' and a string 'file_name'", where)
            )
            continue
        where = f"images[{i}] (id={im['id']})"
        width, height = im.get("width"), im.get("height")
        size: tuple[int, int] | None = None
        if width is None and height is None:
            pass
        elif (
            isinstance(width, int)
            and isinstance(height, int)
            and _is_int(width)
            and _is_int(height)
            and width > 0
            and height > 0
        ):
            size = (height, width)
        else:
            report.handle(
                DataError(
                    "malformed", source, f"width/height must be positive integers, got {width!r}/{height!r}", where
                )
            )
            continue
        if im["id"] in images:
            report.handle(DataError("duplicate_id", source, f"image id {im['id']} is declared twice", where))
            continue
        images[im["id"]] = CocoImage(im["id"], im["file_name"], size)

    for i, ann in enumerate(lists["annotations"]):
        if not isinstance(ann, dict):
            report.handle(DataError("malformed", source, "an annotation must be an object", f"annotations[{i}]"))
            continue
        ann_id = ann.get("id")
        where = f"annotations[{i}]" + (f" (id={ann_id})" if _is_int(ann_id) else "")
        image_id = ann.get("image_id")
        image = images.get(int(image_id)) if isinstance(image_id, int) and _is_int(image_id) else None
        if image is None:
            report.handle(
                DataError("unknown_image", source, f"image_id {ann.get('image_id')!r} is not declared", where)
            )
            continue
        if ann.get("iscrowd", 0) not in (0, False, None):
            report.note("crowd_ignored")
            continue
        category = ann.get("category_id")
        if not _is_int(category) or category not in label_of:
            report.handle(DataError("unknown_category", source, f"category_id {category!r} is not declared", where))
            continue
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
            report.handle(
                DataError("malformed", source, f"bbox must be a list of 4 numbers, got {str(bbox)[:80]}", where)
            )
            continue
        x, y, w, h = (float(v) for v in bbox)
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            report.handle(DataError("bad_box", source, f"bbox {bbox} has a NaN or infinite value", where))
            continue
        if w <= 0 or h <= 0:
            report.handle(DataError("bad_box", source, f"bbox {bbox} has a non-positive width or height", where))
            continue
        if not (x < x + w < math.inf and y < y + h < math.inf):  # e.g. x = 2**53, w = 1: x + w == x
            report.handle(
                DataError("bad_box", source, f"bbox {bbox} has no area once its corners are computed", where)
            )
            continue
        image.boxes.append([x, y, w, h])
        image.labels.append(label_of[category])
        image.wheres.append(where)

    out = list(images.values())
    for image in out:
        xywh = torch.tensor(image.boxes, dtype=torch.float64).reshape(-1, 4)
        image.boxes = box_convert(xywh, "xywh", "xyxy").tolist()
        if image.size is not None:
            _validate(image, source, report)
    return CocoIndex(category_ids, tuple(names_by_id[c] for c in category_ids), out)


def _validate(image: CocoImage, source: object, report: DataReport) -> None:
    assert image.size is not None
    boxes, keep = check_boxes(np.asarray(image.boxes, dtype=np.float64), image.size, source, image.wheres, report)
    image.boxes = boxes[keep].tolist()
    image.labels = [lab for lab, k in zip(image.labels, keep) if k]
    image.wheres = [w for w, k in zip(image.wheres, keep) if k]
    image.checked = True


class CocoDetection(DetectionDataset):
    """COCO-format detection dataset: ``root/ann_file`` and images under ``root/image_dir``.

    Every image file name in the JSON is joined to ``root/image_dir`` and must stay inside ``root``
    (``path_escape`` otherwise); missing files are ``missing_file``. See the module docstring for the
    category-id rule and box handling.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        ann_file: str | os.PathLike,
        image_dir: str = ".",
        on_error: OnError = "raise",
        report: DataReport | None = None,
        name: str | None = None,
    ):
        report = report if report is not None else DataReport(on_error)
        root_path = resolve_root(root)
        ann_path = Path(ann_file) if Path(ann_file).is_absolute() else root_path / ann_file
        try:
            data = ann_path.read_bytes()
        except FileNotFoundError:
            raise DataError("missing_file", ann_path, "annotation file does not exist") from None
        except OSError as exc:
            raise DataError("malformed", ann_path, f"cannot read annotation file: {exc.strerror or exc}") from None
        index = parse_coco(data, ann_path, report)
        records = []
        for image in index.images:
            where = f"image id={image.image_id}"
            try:
                path = safe_join(root_path, image.file_name, ann_path, where, base=image_dir)
                if not path.is_file():
                    raise DataError("missing_file", path, f"image of {where} in {ann_path} does not exist")
                if image.size is None:
                    image.size = read_image_size(path)
            except DataError as err:
                report.handle(err)
                continue
            if not image.checked:
                _validate(image, ann_path, report)
            records.append(
                ImageRecord(
                    image_id=image.image_id,
                    file_name=image.file_name,
                    path=path,
                    size=image.size,
                    boxes=np.asarray(image.boxes, dtype=np.float32).reshape(-1, 4),
                    labels=np.asarray(image.labels, dtype=np.int64),
                )
            )
        super().__init__(
            records,
            index.class_names,
            root_path,
            report,
            category_ids=index.category_ids,
            name=name or Path(ann_file).stem,
        )
