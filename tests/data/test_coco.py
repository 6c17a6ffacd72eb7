"""COCO reader: id mapping, box conversion and validation, negatives, the on_error policy."""

import json

import numpy as np
import pytest
import torch

from cvkit.data import CocoDetection, DataError, DataReport
from cvkit.data import dataset as dataset_module
from cvkit.data.coco import parse_coco

from .helpers import write_coco

CATS = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}, {"id": 90, "name": "zebra"}]


def build(tmp_path, images, annotations, categories=CATS, on_error="raise"):
    path = write_coco(tmp_path, images, annotations, categories)
    return CocoDetection(tmp_path, path.name, "images", on_error=on_error)


def test_category_ids_map_to_labels_by_sorted_id(tmp_path):
    images = [{"id": 1, "file_name": "a.png", "height": 40, "width": 60}]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 90, "bbox": [1, 2, 10, 5]},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [0, 0, 4, 4]},
        {"id": 3, "image_id": 1, "category_id": 7, "bbox": [5, 5, 4, 4]},
    ]
    ds = build(tmp_path, images, anns)
    assert ds.category_ids == (3, 7, 90)
    assert ds.class_names == ("cat", "dog", "zebra")
    sample = ds[0]
    assert sample["labels"].tolist() == [2, 0, 1]
    assert [ds.category_ids[label] for label in sample["labels"].tolist()] == [90, 3, 7]  # written back


def test_sample_layout_and_xywh_to_xyxy(tmp_path):
    images = [{"id": 5, "file_name": "a.png", "height": 40, "width": 60}]
    ds = build(tmp_path, images, [{"id": 1, "image_id": 5, "category_id": 3, "bbox": [1.5, 2, 10, 5.25]}])
    sample = ds[0]
    assert sample["image"].dtype == np.uint8 and sample["image"].shape == (40, 60, 3)
    assert sample["boxes"].dtype == torch.float32 and sample["labels"].dtype == torch.int64
    assert sample["boxes"].tolist() == [[1.5, 2.0, 11.5, 7.25]]
    assert (sample["image_id"], sample["orig_size"], sample["file_name"]) == (5, (40, 60), "a.png")


def test_images_without_boxes_are_kept_and_crowd_is_ignored(tmp_path):
    images = [
        {"id": 1, "file_name": "a.png", "height": 40, "width": 60},
        {"id": 2, "file_name": "b.png", "height": 30, "width": 30},
    ]
    anns = [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5], "iscrowd": 1}]
    ds = build(tmp_path, images, anns)
    assert len(ds) == 2
    assert [len(s["boxes"]) for s in (ds[0], ds[1])] == [0, 0]
    assert ds[1]["boxes"].shape == (0, 4)
    assert ds.report.notes["crowd_ignored"] == 1


def test_partly_outside_boxes_are_clipped_and_counted(tmp_path):
    images = [{"id": 1, "file_name": "a.png", "height": 40, "width": 60}]
    anns = [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [-5, 30, 20, 20]}]
    ds = build(tmp_path, images, anns)
    assert ds[0]["boxes"].tolist() == [[0.0, 30.0, 15.0, 40.0]]
    assert ds.report.notes["clipped"] == 1


BAD_ANNOTATIONS = [
    ({"id": 9, "image_id": 1, "category_id": 3, "bbox": [1, 1, -4, 5]}, "bad_box"),
    ({"id": 9, "image_id": 1, "category_id": 3, "bbox": [1, 1, 0, 5]}, "bad_box"),
    ({"id": 9, "image_id": 1, "category_id": 3, "bbox": [1, float("nan"), 3, 5]}, "bad_box"),
    ({"id": 9, "image_id": 1, "category_id": 3, "bbox": [0, 2.0**53, 1, 1]}, "bad_box"),  # y + h == y
    ({"id": 9, "image_id": 1, "category_id": 3, "bbox": [1e308, 1, 1e308, 5]}, "bad_box"),  # x + w == inf
    ({"id": 9, "image_id": 1, "category_id": 3, "bbox": [100, 1, 3, 5]}, "box_outside"),
    ({"id": 9, "image_id": 1, "category_id": 4, "bbox": [1, 1, 3, 5]}, "unknown_category"),
    ({"id": 9, "image_id": 77, "category_id": 3, "bbox": [1, 1, 3, 5]}, "unknown_image"),
    ({"id": 9, "image_id": 1, "category_id": 3, "bbox": [1, 1, 3]}, "malformed"),
    ({"id": 9, "image_id": 1, "category_id": 3, "bbox": "1 1 3 3"}, "malformed"),
]


@pytest.mark.parametrize("bad,kind", BAD_ANNOTATIONS)
def test_bad_annotation_raises_naming_file_and_annotation(tmp_path, bad, kind):
    images = [{"id": 1, "file_name": "a.png", "height": 40, "width": 60}]
    good = {"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 3, 3]}
    with pytest.raises(DataError) as info:
        build(tmp_path, images, [good, bad])
    err = info.value
    assert err.kind == kind
    assert err.file.endswith("ann.json") and err.where.startswith("annotations[1]")
    assert "id=9" in err.where


@pytest.mark.parametrize("bad,kind", BAD_ANNOTATIONS)
def test_bad_annotation_is_skipped_and_counted(tmp_path, bad, kind):
    images = [{"id": 1, "file_name": "a.png", "height": 40, "width": 60}]
    good = {"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 3, 3]}
    ds = build(tmp_path, images, [good, bad], on_error="skip")
    assert ds[0]["boxes"].tolist() == [[1.0, 1.0, 4.0, 4.0]]  # only the good box survives
    assert dict(ds.report.errors) == {kind: 1}
    assert kind in ds.report.format()


def test_image_level_problems(tmp_path):
    images = [
        {"id": 1, "file_name": "a.png", "height": 40, "width": 60},
        {"id": 2, "file_name": "missing.png", "height": 40, "width": 60, "_write": False},
        {"id": 3, "file_name": "../../etc/passwd", "height": 40, "width": 60},
        {"id": 4, "file_name": "/etc/passwd", "height": 40, "width": 60},
        {"id": 1, "file_name": "again.png", "height": 40, "width": 60},
        {"id": 6, "file_name": "c.png", "height": -3, "width": 60},
    ]
    ds = build(tmp_path, images, [], on_error="skip")
    assert [r.file_name for r in ds.records] == ["a.png"]
    assert dict(ds.report.errors) == {"missing_file": 1, "path_escape": 2, "duplicate_id": 1, "malformed": 1}
    with pytest.raises(DataError) as info:
        build(tmp_path, images[:3], [])
    assert info.value.kind == "missing_file"


def test_file_level_problems_always_raise(tmp_path):
    for text in ("{not json", "[]", json.dumps({"images": {}, "categories": []}), json.dumps({"images": []})):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(DataError) as info:
            CocoDetection(tmp_path, "bad.json", on_error="skip")
        assert info.value.kind == "malformed" and "bad.json" in str(info.value)
    with pytest.raises(DataError) as info:
        CocoDetection(tmp_path, "absent.json")
    assert info.value.kind == "missing_file"


def test_json_syntax_error_names_line_and_column():
    with pytest.raises(DataError) as info:
        parse_coco(b'{\n  "images": [,]\n}', "x.json", DataReport())
    assert info.value.where == "line 2 column 14"


def test_size_missing_from_json_is_read_from_the_header(tmp_path):
    images = [{"id": 1, "file_name": "a.png", "height": 40, "width": 60}]
    write_coco(tmp_path, images, [], CATS)
    doc = {
        "images": [{"id": 1, "file_name": "a.png"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [50, 30, 20, 20]}],
        "categories": CATS,
    }
    (tmp_path / "nosize.json").write_text(json.dumps(doc))
    ds = CocoDetection(tmp_path, "nosize.json", "images")
    assert ds.records[0].size == (40, 60)
    assert ds[0]["boxes"].tolist() == [[50.0, 30.0, 60.0, 40.0]]  # clipped with the header size


def test_decoded_size_must_match_the_annotated_size(tmp_path):
    images = [{"id": 1, "file_name": "a.png", "height": 40, "width": 60}]
    path = write_coco(tmp_path, images, [], CATS)
    doc = json.loads(path.read_text())
    doc["images"][0]["height"] = 41
    path.write_text(json.dumps(doc))
    ds = CocoDetection(tmp_path, path.name, "images")
    with pytest.raises(DataError) as info:
        ds[0]
    assert info.value.kind == "size_mismatch"
    skip = CocoDetection(tmp_path, path.name, "images", on_error="skip")
    assert skip[0] is None and skip.report.errors["size_mismatch"] == 1
    assert skip.validate_images() == 1 and len(skip) == 0  # dropped for later epochs


def test_annotations_lists_boxes_without_decoding(tmp_path, monkeypatch):
    images = [{"id": i, "file_name": f"{i}.png", "height": 40, "width": 60} for i in range(1, 4)]
    anns = [{"id": k, "image_id": 1 + k % 2, "category_id": 7, "bbox": [k, k, 5, 6]} for k in range(5)]
    ds = build(tmp_path, images, anns)
    expected = [(s["image_id"], s["boxes"].tolist(), s["labels"].tolist()) for s in (ds[i] for i in range(len(ds)))]

    def no_decode(*args, **kwargs):
        raise AssertionError("annotations() must not decode images")

    monkeypatch.setattr(dataset_module, "read_image", no_decode)
    listed = list(ds.annotations())
    assert [(a.image_id, a.boxes.tolist(), a.labels.tolist()) for a in listed] == expected
    assert all(a.size == (40, 60) and a.boxes.dtype == torch.float32 and a.labels.dtype == torch.int64 for a in listed)
    listed[0].boxes.add_(1000)  # copies: the dataset is not changed
    assert next(iter(ds.annotations())).boxes.tolist() == expected[0][1]


def test_synthetic_data_reads_back(synthetic_root):
    ds = CocoDetection(synthetic_root, "annotations/instances_train.json", "images/train")
    assert len(ds) == 24 and ds.class_names == ("circle", "square", "triangle", "star", "cross")
    assert ds.category_ids == (1, 2, 3, 4, 5)
    assert ds.report.num_errors == 0 and not ds.report.notes
    for ann in ds.annotations():
        assert ann.size == (300, 300)
        assert (ann.boxes[:, 2:] > ann.boxes[:, :2]).all()
        assert ((ann.boxes >= 0) & (ann.boxes <= 300)).all()
