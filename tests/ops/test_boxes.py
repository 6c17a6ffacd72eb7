import pytest
import torch
import torchvision.ops as tvo
from hypothesis import given, settings
from hypothesis import strategies as st

from cvkit import ops
from tests.ops._reference import random_boxes

FORMATS = ["xyxy", "xywh", "cxcywh"]


@pytest.mark.parametrize("in_fmt", FORMATS)
@pytest.mark.parametrize("out_fmt", FORMATS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_box_convert_matches_torchvision(in_fmt, out_fmt, dtype):
    boxes = random_boxes(50, dtype=dtype)
    ours = ops.box_convert(boxes, in_fmt, out_fmt)
    ref = tvo.box_convert(boxes, in_fmt, out_fmt)
    assert ours.dtype == dtype
    torch.testing.assert_close(ours, ref)


def test_box_convert_returns_copy_and_batches():
    boxes = random_boxes(6).reshape(2, 3, 4)
    same = ops.box_convert(boxes, "xyxy", "xyxy")
    assert same.data_ptr() != boxes.data_ptr()
    torch.testing.assert_close(ops.box_convert(boxes, "xyxy", "cxcywh"), tvo.box_convert(boxes, "xyxy", "cxcywh"))


def test_box_convert_rejects_unknown_format():
    with pytest.raises(ValueError, match="xyxy"):
        ops.box_convert(random_boxes(2), "xyxy", "yxyx")
    with pytest.raises(ValueError, match=r"\[..., 4\]"):
        ops.box_convert(torch.zeros(3, 5), "xyxy", "xywh")


finite = st.floats(-1e4, 1e4, allow_nan=False, width=64)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(finite, finite, st.floats(0, 1e3), st.floats(0, 1e3)), min_size=1, max_size=20),
       st.sampled_from(FORMATS), st.sampled_from(FORMATS))
def test_box_convert_round_trip(rows, fmt_a, fmt_b):
    xywh = torch.tensor(rows, dtype=torch.float64)
    boxes = ops.box_convert(xywh, "xywh", fmt_a)
    back = ops.box_convert(ops.box_convert(boxes, fmt_a, fmt_b), fmt_b, fmt_a)
    torch.testing.assert_close(back, boxes, atol=1e-9, rtol=1e-12)


def test_box_area_matches_torchvision_and_upcasts_half():
    boxes = random_boxes(40)
    torch.testing.assert_close(ops.box_area(boxes), tvo.box_area(boxes))
    half = ops.box_area(boxes.half())
    assert half.dtype == torch.float32
    assert ops.box_area(torch.zeros(0, 4)).shape == (0,)


def test_clip_and_remove_small_match_torchvision():
    boxes = random_boxes(100, size=150.0) - 20
    before = boxes.clone()
    torch.testing.assert_close(ops.clip_boxes_to_image(boxes, (90, 120)), tvo.clip_boxes_to_image(boxes, (90, 120)))
    assert torch.equal(ops.remove_small_boxes(boxes, 10.0), tvo.remove_small_boxes(boxes, 10.0))
    assert torch.equal(boxes, before)  # inputs untouched
    empty = torch.zeros(0, 4)
    assert ops.clip_boxes_to_image(empty, (5, 5)).shape == (0, 4)
    assert ops.remove_small_boxes(empty, 1.0).dtype == torch.int64
