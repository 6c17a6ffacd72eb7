"""YOLO txt detection reader: ``data.yaml`` with class ``names`` and split folders, one ``.txt`` per image.

Layout (paths in ``data.yaml`` are relative to the dataset root and must stay inside it)::

    root/data.yaml            names: [cat, dog] (or {0: cat, 1: dog}); nc (optional); train: images/train; val: ...
    root/images/train/a.jpg   a split entry is a folder (searched recursively) or a .txt list of image paths
    root/labels/train/a.txt   the image path with its last ``images`` folder replaced by ``labels``

Each label line is ``class cx cy w h`` with the box centre and size normalized by the image width and height.
Labels are the class indices (``dataset.category_ids = (0, ..., C-1)``). On load a line becomes absolute
xyxy through ``box_convert(..., "cxcywh", "xyxy")`` times ``(W, H, W, H)``, with the image size read from
the file header (no decode); then it is validated as in :func:`cvkit.data.dataset.check_boxes` (clipped
when partly outside). A line that is not five numbers is ``malformed``; a class index that is not an
integer in ``0..C-1`` is ``unknown_category``; NaN/inf or ``w, h <= 0`` is ``bad_box``; each names the
label file and line. An image without a label file is a negative (note ``no_label_file``).

Listing annotations without decoding: ``YOLODetection(...).annotations()`` (see :mod:`cvkit.data.dataset`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
import yaml

from cvkit.data.dataset import DetectionDataset, ImageRecord, check_boxes
from cvkit.data.errors import DataError, DataReport, OnError
from cvkit.data.io import IMAGE_EXTENSIONS, read_image_size, resolve_root, safe_join
from cvkit.ops.boxes import box_convert

__all__ = ["YOLODetection", "parse_yolo_data_yaml", "parse_yolo_labels", "YoloDataSpec"]


@dataclass(frozen=True)
class YoloDataSpec:
    class_names: tuple[str, ...]
    splits: dict[str, tuple[str, ...]]  # split name -> folder or .txt list paths (relative to the root)


def parse_yolo_data_yaml(data: bytes, source: object) -> YoloDataSpec:
    """Parse ``data.yaml``: class names and split paths; only :class:`DataError` comes out."""
    try:
        obj = yaml.safe_load(data)
    except Exception as exc:  # any failure of the YAML library is a malformed file
        raise DataError("malformed", source, f"invalid YAML ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise DataError("malformed", source, "top level must be a mapping")
    names = obj.get("names")
    if isinstance(names, dict):
        keys = list(names)
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in keys) or sorted(keys) != list(
            range(len(keys))
        ):
            raise DataError("malformed", source, "'names' as a mapping needs the keys 0..N-1")
        names = [names[k] for k in range(len(keys))]
    if not isinstance(names, list) or not names or not all(isinstance(n, (str, int)) for n in names):
        raise DataError("malformed", source, "'names' must be a non-empty list (or {index: name} mapping)")
    names = [str(n) for n in names]
    nc = obj.get("nc")
    if nc is not None and nc != len(names):
        raise DataError("malformed", source, f"'nc' is {nc!r} but 'names' has {len(names)} entries")
    splits: dict[str, tuple[str, ...]] = {}
    for key in ("train", "val", "test"):
        value = obj.get(key)
        if value is None:
            continue
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, str) and v.strip() for v in items):
            raise DataError("malformed", source, f"'{key}' must be a path or a list of paths", key)
        splits[key] = tuple(items)
    return YoloDataSpec(tuple(names), splits)


def parse_yolo_labels(
    data: bytes,
    source: object,
    num_classes: int,
    size: tuple[int, int],
    report: DataReport,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Parse one label file for an image of ``size = (height, width)``.

    Returns ``(boxes float64 [M, 4] xyxy absolute, unclipped, labels int64 [M], wheres)``; bad lines go
    through ``report``; only :class:`DataError` comes out.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError("malformed", source, f"not UTF-8 text (byte {exc.start})") from None
    rows: list[list[float]] = []
    labels: list[int] = []
    wheres: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"line {number}"
        parts = stripped.split()
        if len(parts) != 5:
            report.handle(DataError("malformed", source, f"expected 'class cx cy w h', got {len(parts)} fields", where))
            continue
        try:
            values = [float(p) for p in parts[1:]]
        except ValueError:
            report.handle(DataError("malformed", source, f"non-numeric coordinate in {stripped[:60]!r}", where))
            continue
        try:
            cls = int(parts[0])
        except ValueError:
            report.handle(DataError("unknown_category", source, f"class {parts[0][:20]!r} is not an integer", where))
            continue
        if not 0 <= cls < num_classes:
            report.handle(DataError("unknown_category", source, f"class {cls} is not in 0..{num_classes - 1}", where))
            continue
        if not all(math.isfinite(v) for v in values):
            report.handle(DataError("bad_box", source, f"NaN or infinite value in {stripped[:60]!r}", where))
            continue
        if values[2] <= 0 or values[3] <= 0:
            report.handle(DataError("bad_box", source, "box width and height must be positive", where))
            continue
        rows.append(values)
        labels.append(cls)
        wheres.append(where)
    height, width = size
    cxcywh = torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)
    scale = torch.tensor([width, height, width, height], dtype=torch.float64)
    boxes = box_convert(cxcywh, "cxcywh", "xyxy") * scale
    return boxes.numpy(), np.asarray(labels, dtype=np.int64), wheres


def _label_path(image_rel: str) -> str:
    parts = list(PurePosixPath(image_rel).parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return str(PurePosixPath(*parts).with_suffix(".txt"))


class YOLODetection(DetectionDataset):
    """YOLO layout under ``root`` (see the module docstring); ``split`` is a key of ``data.yaml``."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        data_yaml: str = "data.yaml",
        on_error: OnError = "raise",
        report: DataReport | None = None,
    ):
        report = report if report is not None else DataReport(on_error)
        root_path = resolve_root(root)
        yaml_path = safe_join(root_path, data_yaml)
        try:
            spec = parse_yolo_data_yaml(yaml_path.read_bytes(), yaml_path)
        except FileNotFoundError:
            raise DataError("missing_file", yaml_path, "data.yaml does not exist") from None
        if split not in spec.splits:
            raise DataError("malformed", yaml_path, f"no split {split!r}; it declares {sorted(spec.splits)}")
        records = []
        for position, image_rel in enumerate(self._list_images(root_path, spec.splits[split], yaml_path)):
            try:
                path = safe_join(root_path, image_rel, yaml_path, split)
                if not path.is_file():
                    raise DataError("missing_file", path, f"image listed for split {split!r} does not exist")
                size = read_image_size(path)
                label_path = safe_join(root_path, _label_path(image_rel), yaml_path, split)
                try:
                    data = label_path.read_bytes()
                except FileNotFoundError:
                    report.note("no_label_file")
                    data = b""
                boxes, labels, wheres = parse_yolo_labels(data, label_path, len(spec.class_names), size, report)
                boxes, keep = check_boxes(boxes, size, label_path, wheres, report)
            except DataError as err:
                report.handle(err)
                continue
            records.append(ImageRecord(position, image_rel, path, size, boxes[keep], labels[keep]))
        super().__init__(
            records,
            spec.class_names,
            root_path,
            report,
            category_ids=range(len(spec.class_names)),
            name=f"yolo-{split}",
        )

    @staticmethod
    def _list_images(root: Path, entries: tuple[str, ...], yaml_path: Path) -> list[str]:
        """Image paths relative to ``root`` for a split's folders / ``.txt`` lists, sorted per entry."""
        out: list[str] = []
        for entry in entries:
            path = safe_join(root, entry, yaml_path, "split path")
            if path.is_dir():
                found = []
                for folder, _dirs, files in os.walk(path, followlinks=False):
                    for name in files:
                        if name.lower().endswith(IMAGE_EXTENSIONS):
                            found.append(os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/"))
                out += sorted(found)
            elif path.suffix == ".txt" and path.is_file():
                for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                    line = line.strip()
                    if line:
                        out.append(line[2:] if line.startswith("./") else line)
            else:
                raise DataError("missing_file", path, "split path is neither a folder nor a .txt list", entry)
        return out
