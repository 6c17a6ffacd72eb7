"""Pascal VOC reader: 1-based corners to continuous xyxy, difficult objects, class names, bad XML."""

import pytest

from cvkit.data import DataError, DataReport, VOCDetection
from cvkit.data.voc import VOC_CLASSES, parse_voc_xml

from .helpers import write_image


def voc_xml(objects, width=60, height=40, filename=None, size=True):
    objs = ""
    for name, box, difficult in objects:
        corners = "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
        objs += f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>{corners}</bndbox></object>"
    size_xml = f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>" if size else ""
    fname = f"<filename>{filename}</filename>" if filename else ""
    return f"<annotation>{fname}{size_xml}{objs}</annotation>"


def make_voc(tmp_path, entries, split="train"):
    """entries: {image_id: xml string}; writes JPEGImages/<id>.jpg of 40x60."""
    (tmp_path / "Annotations").mkdir(exist_ok=True)
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for key, xml in entries.items():
        (tmp_path / "Annotations" / f"{key}.xml").write_text(xml)
        write_image(tmp_path / "JPEGImages" / f"{key}.jpg", 40, 60)
    (tmp_path / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(entries) + "\n")


def test_corners_become_continuous_xyxy_and_labels_follow_class_names(tmp_path):
    make_voc(tmp_path, {"img1": voc_xml([("dog", (1, 1, 10, 20), 0), ("cat", (5, 6, 5, 6), 0)])})
    ds = VOCDetection(tmp_path, "train")
    sample = ds[0]
    assert sample["boxes"].tolist() == [[0.0, 0.0, 10.0, 20.0], [4.0, 5.0, 5.0, 6.0]]  # a 1-pixel box has width 1
    assert sample["labels"].tolist() == [VOC_CLASSES.index("dog"), VOC_CLASSES.index("cat")]
    assert ds.category_ids == tuple(range(20)) and sample["image_id"] == 0
    assert sample["file_name"] == "JPEGImages/img1.jpg"


def test_difficult_objects_dropped_unless_kept_and_negatives_kept(tmp_path):
    make_voc(tmp_path, {"a": voc_xml([("dog", (1, 1, 10, 20), 1), ("cat", (2, 2, 8, 8), 0)]), "b": voc_xml([])})
    ds = VOCDetection(tmp_path, "train")
    assert [len(ds[i]["boxes"]) for i in range(2)] == [1, 0]
    assert ds.report.notes["difficult_ignored"] == 1
    assert len(VOCDetection(tmp_path, "train", keep_difficult=True)[0]["boxes"]) == 2


def test_custom_class_names(tmp_path):
    make_voc(tmp_path, {"a": voc_xml([("b", (1, 1, 10, 20), 0), ("a", (2, 2, 8, 8), 0)])})
    ds = VOCDetection(tmp_path, "train", class_names=("a", "b"))
    assert ds.class_names == ("a", "b") and ds[0]["labels"].tolist() == [1, 0]


@pytest.mark.parametrize(
    "objects,kind",
    [
        ([("unicorn", (1, 1, 10, 20), 0)], "unknown_category"),
        ([("dog", (10, 1, 5, 20), 0)], "bad_box"),
        ([("dog", ("nan", 1, 5, 20), 0)], "bad_box"),
        ([("dog", (100, 100, 120, 120), 0)], "box_outside"),
        ([("dog", ("x", 1, 5, 20), 0)], "malformed"),
        ([("dog", (1, 1, 5, 20), 7)], "malformed"),
    ],
)
def test_bad_objects_raise_or_skip(tmp_path, objects, kind):
    make_voc(tmp_path, {"a": voc_xml([("cat", (2, 2, 8, 8), 0)] + objects)})
    with pytest.raises(DataError) as info:
        VOCDetection(tmp_path, "train")
    assert info.value.kind == kind and info.value.file.endswith("a.xml") and info.value.where.startswith("object 1")
    ds = VOCDetection(tmp_path, "train", on_error="skip")
    assert len(ds[0]["boxes"]) == 1 and dict(ds.report.errors) == {kind: 1}


def test_bad_files(tmp_path):
    make_voc(tmp_path, {"a": "<annotation><size>", "b": voc_xml([("cat", (2, 2, 8, 8), 0)])})
    with pytest.raises(DataError) as info:
        VOCDetection(tmp_path, "train")
    assert info.value.kind == "malformed" and info.value.where.startswith("line ")
    ds = VOCDetection(tmp_path, "train", on_error="skip")
    assert len(ds) == 1 and ds.report.errors["malformed"] == 1
    with pytest.raises(DataError) as info:
        VOCDetection(tmp_path, "val")
    assert info.value.kind == "missing_file"


def test_entity_declarations_in_utf16_are_rejected_too():
    doc = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE a [<!ENTITY x "dog">]><annotation><object>'
    doc += "<name>&x;</name></object></annotation>"
    with pytest.raises(DataError, match="DTD") as info:
        parse_voc_xml(doc.encode("utf-16"), "a.xml", {"dog": 0}, DataReport("raise"))
    assert info.value.kind == "malformed"


def test_entity_declarations_are_rejected():
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxx"><!ENTITY y "&x;&x;&x;">]><annotation>&y;</annotation>'
    )
    with pytest.raises(DataError) as info:
        parse_voc_xml(bomb, "bomb.xml", {}, DataReport())
    assert info.value.kind == "malformed"


def test_filename_escaping_the_root_is_never_read(tmp_path):
    make_voc(tmp_path, {"a": voc_xml([], filename="../../../etc/passwd"), "b": voc_xml([], filename="/etc/passwd")})
    ds = VOCDetection(tmp_path, "train", on_error="skip")
    assert len(ds) == 0 and ds.report.errors["path_escape"] == 2


def test_missing_size_is_read_from_the_image_header(tmp_path):
    make_voc(tmp_path, {"a": voc_xml([("cat", (2, 2, 80, 8), 0)], size=False)})
    ds = VOCDetection(tmp_path, "train")
    assert ds.records[0].size == (40, 60)
    assert ds[0]["boxes"].tolist() == [[1.0, 1.0, 60.0, 8.0]] and ds.report.notes["clipped"] == 1
