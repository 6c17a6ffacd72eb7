"""Fuzz the three detection parsers: whatever the input, only cvkit's DataError may come out,
and whatever is accepted is a valid box."""

import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cvkit.data import DataError, DataReport
from cvkit.data.coco import parse_coco
from cvkit.data.dataset import check_boxes
from cvkit.data.voc import parse_voc_xml
from cvkit.data.yolo import parse_yolo_data_yaml, parse_yolo_labels

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from([0, 1, -1, 3, 7, 1e308, -0.0, "1", "nan", [], {}]),
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20,
)
policies = st.sampled_from(["raise", "skip"])


def only_data_error(fn, *args):
    try:
        return fn(*args)
    except DataError:
        return None


def valid_coco_document(draw_values):
    """A valid COCO document with some fields replaced by fuzzed values."""
    doc = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 50, "height": 40}, {"id": 2, "file_name": "b.jpg"}],
        "categories": [{"id": 3, "name": "cat"}, {"id": 9, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 2, 10, 10]},
            {"id": 2, "image_id": 2, "category_id": 9, "bbox": [5, 5, 3, 3], "iscrowd": 0},
        ],
    }
    for (section, index, key), value in draw_values:
        entries = doc[section]
        entries[index % len(entries)][key] = value
    return doc


coco_edits = st.lists(
    st.tuples(
        st.tuples(
            st.sampled_from(["images", "categories", "annotations"]), st.integers(0, 3),
            st.sampled_from(["id", "file_name", "width", "height", "name", "image_id", "category_id", "bbox",
                             "iscrowd"]),
        ),
        st.one_of(json_values, st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=4, max_size=4)),
    ),
    max_size=6,
)


def check_accepted_coco(index):
    for image in index.images:
        boxes = np.asarray(image.boxes, dtype=np.float64).reshape(-1, 4)
        assert len(boxes) == len(image.labels) == len(image.wheres)
        assert np.isfinite(boxes).all() and (boxes[:, 2:] > boxes[:, :2]).all()
        assert all(0 <= label < len(index.category_ids) for label in image.labels)
        if image.checked:
            height, width = image.size
            assert (boxes >= 0).all() and (boxes[:, 0::2] <= width).all() and (boxes[:, 1::2] <= height).all()


@FUZZ
@given(data=st.binary(max_size=300), policy=policies)
def test_coco_random_bytes(data, policy):
    only_data_error(parse_coco, data, "fuzz.json", DataReport(policy))


@FUZZ
@given(doc=json_values, policy=policies)
def test_coco_random_json(doc, policy):
    index = only_data_error(parse_coco, json.dumps(doc).encode(), "fuzz.json", DataReport(policy))
    if index is not None:
        check_accepted_coco(index)


@FUZZ
@given(edits=coco_edits, policy=policies)
def test_coco_mutated_documents(edits, policy):
    doc = valid_coco_document(edits)
    index = only_data_error(parse_coco, json.dumps(doc).encode(), "fuzz.json", DataReport(policy))
    if index is not None:
        check_accepted_coco(index)


xml_text = st.one_of(st.text(max_size=10), st.sampled_from(["1", "0", "10.5", "nan", "-4", "1e400", "dog", ""]))


@st.composite
def voc_documents(draw):
    parts = []
    if draw(st.booleans()):
        parts.append(f"<size><width>{draw(xml_text)}</width><height>{draw(xml_text)}</height></size>")
    for _ in range(draw(st.integers(0, 3))):
        box = "".join(f"<{t}>{draw(xml_text)}</{t}>" for t in ("xmin", "ymin", "xmax", "ymax") if draw(st.booleans()))
        name = draw(st.sampled_from(["dog", "cat", "", "unicorn"]))
        parts.append(
            f"<object><name>{name}</name><difficult>{draw(xml_text)}</difficult><bndbox>{box}</bndbox></object>"
        )
    text = "<annotation>" + "".join(parts) + "</annotation>"
    if draw(st.booleans()):  # break it somewhere
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.text(max_size=5)) + text[cut:]
    return text.encode("utf-8", errors="surrogatepass") if draw(st.booleans()) else text.encode("utf-8", "replace")


@FUZZ
@given(data=st.one_of(st.binary(max_size=300), voc_documents()), policy=policies, keep=st.booleans())
def test_voc_parser(data, policy, keep):
    report = DataReport(policy)
    entry = only_data_error(parse_voc_xml, data, "fuzz.xml", {"dog": 0, "cat": 1}, report, keep)
    if entry is None:
        return
    assert entry.boxes.shape == (len(entry.labels), 4) and len(entry.wheres) == len(entry.labels)
    assert set(entry.labels) <= {0, 1}
    if entry.size is not None:  # what the reader does next: only DataError, valid boxes
        result = only_data_error(check_boxes, entry.boxes, entry.size, "fuzz.xml", entry.wheres, report)
        if result is not None:
            boxes, keep_mask = result
            kept = boxes[keep_mask]
            assert np.isfinite(kept).all() and (kept[:, 2:] > kept[:, :2]).all()


yolo_tokens = st.one_of(
    st.sampled_from(["0", "1", "2", "-1", "0.5", "1e9", "nan", "inf", "-0.2", "1.5", "abc", "", "0x10", "1_0"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-5, 5).map(str), st.text(max_size=4),
)
yolo_lines = st.lists(yolo_tokens, max_size=7).map(" ".join)


@FUZZ
@given(
    data=st.one_of(st.binary(max_size=200), st.lists(yolo_lines, max_size=6).map(lambda ls: "\n".join(ls).encode())),
    size=st.tuples(st.integers(1, 2000), st.integers(1, 2000)),
    policy=policies,
)
def test_yolo_label_parser(data, size, policy):
    report = DataReport(policy)
    result = only_data_error(parse_yolo_labels, data, "fuzz.txt", 2, size, report)
    if result is None:
        return
    boxes, labels, wheres = result
    assert boxes.shape == (len(labels), 4) and len(wheres) == len(labels)
    assert ((labels >= 0) & (labels < 2)).all() and np.isfinite(boxes).all()
    checked = only_data_error(check_boxes, boxes, size, "fuzz.txt", wheres, report)
    if checked is not None:
        kept = checked[0][checked[1]]
        assert (kept[:, 2:] > kept[:, :2]).all() and (kept >= 0).all()
        assert (kept[:, 0::2] <= size[1]).all() and (kept[:, 1::2] <= size[0]).all()


@FUZZ
@given(data=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_yolo_data_yaml_parser(data):
    spec = only_data_error(parse_yolo_data_yaml, data, "fuzz.yaml")
    if spec is not None:
        assert spec.class_names and all(isinstance(n, str) for n in spec.class_names)
        assert all(isinstance(p, str) for paths in spec.splits.values() for p in paths)
