"""Pascal VOC XML detection reader (``Annotations/ID.xml``, ``JPEGImages/``, ``ImageSets/Main/SPLIT.txt``).

Classes: ``class_names`` (default: the 20 VOC classes, :data:`VOC_CLASSES`); ``label`` is the position of
an object's ``<name>`` in that list; an unlisted name is ``unknown_category``. ``dataset.category_ids`` is
``(0, ..., C-1)``.

Boxes: VOC corners are 1-based inclusive pixel indices; on load they become cvkit's continuous xyxy with
``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax`` (so a one-pixel box ``xmin == xmax`` has width 1).
They are then validated against ``<size>`` (or the image header when ``<size>`` is absent) as in
:func:`cvkit.data.dataset.check_boxes`. Objects marked ``<difficult>1</difficult>`` are dropped unless
``keep_difficult`` (note ``difficult_ignored``). XML with a DTD or entity declarations is rejected as
``malformed`` (no entity expansion). The image file is ``JPEGImages/<filename>`` (``<filename>`` from the
XML, else ``ID.jpg``). Images without objects are kept.

Listing annotations without decoding: ``VOCDetection(...).annotations()`` (see :mod:`cvkit.data.dataset`).
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cvkit.data.dataset import DetectionDataset, ImageRecord, check_boxes
from cvkit.data.errors import DataError, DataReport, OnError
from cvkit.data.io import read_image_size, resolve_root, safe_join

__all__ = ["VOC_CLASSES", "VOCDetection", "parse_voc_xml", "VocEntry"]

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


@dataclass
class VocEntry:
    file_name: str | None  # <filename>, None when absent
    size: tuple[int, int] | None  # (height, width) from <size>, None when absent
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float64))  # xyxy continuous
    labels: list[int] = field(default_factory=list)
    wheres: list[str] = field(default_factory=list)


def _text(node: ET.Element | None, tag: str) -> str | None:
    child = node.find(tag) if node is not None else None
    if child is None or child.text is None:
        return None
    return child.text.strip()


def _int_text(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if math.isfinite(value) and value == int(value) else None


class _Found(Exception):
    def __init__(self, dtd: bool):
        self.dtd = dtd


def _found_dtd(*_: object) -> None:
    raise _Found(True)


def _found_root(*_: object) -> None:
    raise _Found(False)


def _declares_dtd(data: bytes) -> bool:
    """Whether the document has a DOCTYPE or entity declaration, in whatever encoding it declares.

    A byte search would miss a UTF-16 document; expat decodes first. Declarations can only precede the
    root element, so the pass stops there. Malformed XML is left to the parser that follows (it reports
    the line and column).
    """
    import xml.parsers.expat

    parser = xml.parsers.expat.ParserCreate()
    parser.StartDoctypeDeclHandler = _found_dtd
    parser.EntityDeclHandler = _found_dtd
    parser.StartElementHandler = _found_root
    try:
        parser.Parse(data, True)
    except _Found as found:
        return found.dtd
    except (xml.parsers.expat.ExpatError, ValueError, RecursionError, TypeError):
        return False
    return False


def parse_voc_xml(
    data: bytes,
    source: object,
    class_to_label: dict[str, int],
    report: DataReport,
    keep_difficult: bool = False,
) -> VocEntry:
    """Parse one VOC annotation XML; bad objects go through ``report``; only :class:`DataError` comes out.

    Boxes are converted to continuous xyxy but not yet clipped (the caller knows the final image size).
    """
    if _declares_dtd(data):
        raise DataError("malformed", source, "XML with a DTD or entity declarations is not accepted")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        line, col = getattr(exc, "position", (0, 0))
        raise DataError("malformed", source, f"invalid XML: {exc}", f"line {line} column {col}") from None
    except (ValueError, RecursionError, TypeError) as exc:
        raise DataError("malformed", source, f"invalid XML ({type(exc).__name__})") from None
    if root.tag != "annotation":
        raise DataError("malformed", source, f"root element must be <annotation>, got <{root.tag}>")
    size_node = root.find("size")
    width, height = _int_text(_text(size_node, "width")), _int_text(_text(size_node, "height"))
    if size_node is None:
        size = None
    elif width is not None and height is not None and width > 0 and height > 0:
        size = (height, width)
    else:
        raise DataError("malformed", source, "<size> needs positive integer <width> and <height>", "<size>")
    entry = VocEntry(_text(root, "filename") or None, size)
    boxes = []
    for j, obj in enumerate(root.findall("object")):
        name = _text(obj, "name")
        where = f"object {j}" + (f" ({name})" if name else "")
        if name is None:
            report.handle(DataError("malformed", source, "object without a <name>", where))
            continue
        if name not in class_to_label:
            report.handle(DataError("unknown_category", source, f"class {name!r} is not in class_names", where))
            continue
        difficult = _int_text(_text(obj, "difficult") or "0")
        if difficult not in (0, 1):
            report.handle(DataError("malformed", source, "<difficult> must be 0 or 1", where))
            continue
        bnd = obj.find("bndbox")
        try:
            corners = [float(_text(bnd, tag) or "") for tag in ("xmin", "ymin", "xmax", "ymax")]
        except ValueError:
            report.handle(DataError("malformed", source, "<bndbox> needs numeric xmin, ymin, xmax, ymax", where))
            continue
        if difficult and not keep_difficult:
            report.note("difficult_ignored")
            continue
        xmin, ymin, xmax, ymax = corners
        boxes.append([xmin - 1.0, ymin - 1.0, xmax, ymax])  # 1-based inclusive -> continuous
        entry.labels.append(class_to_label[name])
        entry.wheres.append(where)
    entry.boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return entry


class VOCDetection(DetectionDataset):
    """Pascal VOC layout under ``root``: the ids in ``ImageSets/Main/{split}.txt`` (one per line)."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        class_names: Sequence[str] = VOC_CLASSES,
        keep_difficult: bool = False,
        on_error: OnError = "raise",
        report: DataReport | None = None,
    ):
        report = report if report is not None else DataReport(on_error)
        root_path = resolve_root(root)
        class_names = tuple(class_names) or VOC_CLASSES
        class_to_label = {name: i for i, name in enumerate(class_names)}
        split_file = safe_join(root_path, f"{split}.txt", base="ImageSets/Main")
        try:
            text = split_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DataError("missing_file", split_file, "split list does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError("malformed", split_file, f"cannot read split list ({type(exc).__name__})") from None
        records = []
        ids = [line.split()[0] for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        for position, image_key in enumerate(ids):
            where = f"line {position + 1} ({image_key})"
            try:
                xml_path = safe_join(root_path, f"{image_key}.xml", split_file, where, base="Annotations")
                try:
                    data = xml_path.read_bytes()
                except FileNotFoundError:
                    raise DataError(
                        "missing_file", xml_path, f"annotation of {where} in {split_file} does not exist"
                    ) from None
                entry = parse_voc_xml(data, xml_path, class_to_label, report, keep_difficult)
                image_name = entry.file_name or f"{image_key}.jpg"
                path = safe_join(root_path, image_name, xml_path, "<filename>", base="JPEGImages")
                if not path.is_file():
                    raise DataError("missing_file", path, f"image named by {xml_path} does not exist")
                size = entry.size or read_image_size(path)
                boxes, keep = check_boxes(entry.boxes, size, xml_path, entry.wheres, report)
            except DataError as err:
                report.handle(err)
                continue
            records.append(
                ImageRecord(
                    image_id=position,
                    file_name=str(Path("JPEGImages") / image_name),
                    path=path,
                    size=size,
                    boxes=boxes[keep],
                    labels=np.asarray(entry.labels, dtype=np.int64)[keep],
                )
            )
        super().__init__(
            records, class_names, root_path, report, category_ids=range(len(class_names)), name=f"voc-{split}"
        )
