"""YOLO reader: normalized cxcywh to absolute xyxy, data.yaml, missing label files, bad lines."""

import pytest

from cvkit.data import DataError, YOLODetection
from cvkit.data.yolo import parse_yolo_data_yaml

from .helpers import write_image


def make_yolo(tmp_path, labels, names="[cat, dog]", extra=""):
    """labels: {stem: text or None}; images are 40x60 (h x w) JPEGs in images/train."""
    (tmp_path / "data.yaml").write_text(f"names: {names}\ntrain: images/train\nval: images/val\n{extra}")
    for stem, text in labels.items():
        write_image(tmp_path / "images" / "train" / f"{stem}.jpg", 40, 60)
        if text is not None:
            (tmp_path / "labels" / "train").mkdir(parents=True, exist_ok=True)
            (tmp_path / "labels" / "train" / f"{stem}.txt").write_text(text)


def test_normalized_boxes_become_absolute_xyxy(tmp_path):
    make_yolo(tmp_path, {"a": "1 0.5 0.5 0.5 0.25\n\n0 0.25 0.75 0.1 0.5\n"})
    ds = YOLODetection(tmp_path, "train")
    sample = ds[0]
    assert sample["boxes"].tolist() == [[15.0, 15.0, 45.0, 25.0], [12.0, 20.0, 18.0, 40.0]]
    assert sample["labels"].tolist() == [1, 0]
    assert ds.class_names == ("cat", "dog") and ds.category_ids == (0, 1)
    assert sample["file_name"] == "images/train/a.jpg"


def test_missing_label_file_is_a_negative(tmp_path):
    make_yolo(tmp_path, {"a": None, "b": "0 0.5 0.5 0.2 0.2"})
    ds = YOLODetection(tmp_path, "train")
    assert [len(ds[i]["boxes"]) for i in range(2)] == [0, 1]
    assert ds.report.notes["no_label_file"] == 1


@pytest.mark.parametrize(
    "line,kind",
    [
        ("0 0.5 0.5 0.2", "malformed"),
        ("0 0.5 0.5 0.2 0.2 0.9", "malformed"),
        ("0 0.5 abc 0.2 0.2", "malformed"),
        ("2 0.5 0.5 0.2 0.2", "unknown_category"),
        ("-1 0.5 0.5 0.2 0.2", "unknown_category"),
        ("0.5 0.5 0.5 0.2 0.2", "unknown_category"),
        ("0 0.5 0.5 0 0.2", "bad_box"),
        ("0 0.5 nan 0.2 0.2", "bad_box"),
        ("0 3.0 3.0 0.2 0.2", "box_outside"),
    ],
)
def test_bad_lines_name_the_file_and_line(tmp_path, line, kind):
    make_yolo(tmp_path, {"a": f"1 0.5 0.5 0.5 0.25\n{line}\n"})
    with pytest.raises(DataError) as info:
        YOLODetection(tmp_path, "train")
    assert info.value.kind == kind and info.value.file.endswith("a.txt") and info.value.where == "line 2"
    ds = YOLODetection(tmp_path, "train", on_error="skip")
    assert ds[0]["labels"].tolist() == [1] and dict(ds.report.errors) == {kind: 1}


def test_partly_outside_boxes_are_clipped(tmp_path):
    make_yolo(tmp_path, {"a": "0 0.95 0.5 0.2 0.5"})
    ds = YOLODetection(tmp_path, "train")
    assert ds[0]["boxes"].tolist() == [[51.0, 10.0, 60.0, 30.0]] and ds.report.notes["clipped"] == 1


def test_data_yaml_names_mapping_and_errors(tmp_path):
    spec = parse_yolo_data_yaml(b"names: {0: a, 1: b}\nnc: 2\ntrain: [images/x, images/y]\n", "d.yaml")
    assert spec.class_names == ("a", "b") and spec.splits == {"train": ("images/x", "images/y")}
    for text in (b"names: {1: a}", b"names: [a]\nnc: 3", b"names: []", b"- a\n- b", b"names: [a\n", b"names: 3"):
        with pytest.raises(DataError) as info:
            parse_yolo_data_yaml(text, "d.yaml")
        assert info.value.kind == "malformed"
    make_yolo(tmp_path, {"a": ""})
    with pytest.raises(DataError) as info:
        YOLODetection(tmp_path, "test")
    assert "no split 'test'" in str(info.value)


def test_split_paths_escaping_the_root_are_rejected(tmp_path):
    make_yolo(tmp_path, {"a": ""})
    (tmp_path / "data.yaml").write_text("names: [a]\ntrain: ../outside\n")
    with pytest.raises(DataError) as info:
        YOLODetection(tmp_path, "train")
    assert info.value.kind == "path_escape"


def test_split_as_a_list_file(tmp_path):
    make_yolo(tmp_path, {"a": "0 0.5 0.5 0.5 0.5", "b": "1 0.5 0.5 0.5 0.5"}, extra="")
    (tmp_path / "train.txt").write_text("./images/train/b.jpg\nimages/train/a.jpg\n../evil.jpg\n")
    (tmp_path / "data.yaml").write_text("names: [cat, dog]\ntrain: train.txt\n")
    ds = YOLODetection(tmp_path, "train", on_error="skip")
    assert [r.file_name for r in ds.records] == ["images/train/b.jpg", "images/train/a.jpg"]
    assert ds.report.errors["path_escape"] == 1
