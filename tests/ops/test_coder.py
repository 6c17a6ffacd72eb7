"""BoxCoder / encode_boxes / decode_boxes against torchvision's BoxCoder, plus the round-trip property."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder

from cvkit.ops import BoxCoder, decode_boxes, encode_boxes
from cvkit.ops.coder import BBOX_XFORM_CLIP, DEFAULT_WEIGHTS


def _boxes(n, generator, scale=300.0, min_size=1.0, dtype=torch.float32):
    xy = torch.rand(n, 2, generator=generator, dtype=torch.float64) * scale
    wh = torch.rand(n, 2, generator=generator, dtype=torch.float64) * scale / 2 + min_size
    return torch.cat((xy, xy + wh), dim=1).to(dtype)


@pytest.mark.parametrize(
    "weights", [DEFAULT_WEIGHTS, (1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (2.0, 3.0, 0.5, 7.0)]
)
def test_encode_decode_equal_torchvision(weights):
    g = torch.Generator().manual_seed(1)
    anchors = _boxes(500, g)
    gt = _boxes(500, g)
    tv = TVBoxCoder(weights=weights)
    ours = BoxCoder(weights)
    assert torch.equal(ours.encode(gt, anchors), tv.encode_single(gt, anchors))
    deltas = torch.randn(500, 4, generator=g) * 2
    assert torch.equal(ours.decode(deltas, anchors), tv.decode_single(deltas, anchors))


def test_decode_clamps_log_sizes_like_torchvision():
    anchors = torch.tensor([[10.0, 10.0, 50.0, 30.0]] * 4)
    deltas = torch.tensor([[0.0, 0.0, 1e4, -1e4], [0.0, 0.0, 50.0, 50.0], [1.0, -1.0, -50.0, 3.0], [0.0] * 4])
    tv = TVBoxCoder(weights=DEFAULT_WEIGHTS)
    out = decode_boxes(deltas, anchors)
    assert torch.isfinite(out).all()
    assert torch.equal(out, tv.decode_single(deltas, anchors))
    # the clamp: width = exp(clip) * anchor width at most
    width = out[0, 2] - out[0, 0]
    assert width == pytest.approx(math.exp(BBOX_XFORM_CLIP) * 40.0, rel=1e-5)
    # zero deltas give the anchor back
    assert torch.allclose(out[3], anchors[3])


def test_broadcasting_batch_against_anchors():
    g = torch.Generator().manual_seed(2)
    anchors = _boxes(64, g)
    gt = torch.stack([_boxes(64, g) for _ in range(3)])  # [B, A, 4]
    deltas = encode_boxes(gt, anchors)
    assert deltas.shape == (3, 64, 4)
    for b in range(3):
        assert torch.equal(deltas[b], encode_boxes(gt[b], anchors))
    back = decode_boxes(deltas, anchors)
    assert back.shape == (3, 64, 4)
    torch.testing.assert_close(back, gt, rtol=1e-5, atol=1e-3)


def test_dtypes_and_integer_deltas():
    g = torch.Generator().manual_seed(3)
    anchors = _boxes(20, g, dtype=torch.float64)
    gt = _boxes(20, g, dtype=torch.float64)
    d64 = encode_boxes(gt, anchors)
    assert d64.dtype == torch.float64
    torch.testing.assert_close(decode_boxes(d64, anchors), gt, rtol=1e-12, atol=1e-9)
    # mixed precision promotes; integer deltas are read as float32
    assert encode_boxes(gt.float(), anchors).dtype == torch.float64
    zero = decode_boxes(torch.zeros(20, 4, dtype=torch.int64), anchors.float())
    assert zero.dtype == torch.float32
    torch.testing.assert_close(zero, anchors.float())


def test_inputs_not_mutated_and_validation():
    g = torch.Generator().manual_seed(4)
    anchors = _boxes(10, g)
    gt = _boxes(10, g)
    a0, g0 = anchors.clone(), gt.clone()
    decode_boxes(encode_boxes(gt, anchors), anchors)
    assert torch.equal(anchors, a0) and torch.equal(gt, g0)
    with pytest.raises(ValueError, match="4 entries"):
        BoxCoder((1.0, 2.0))
    with pytest.raises(ValueError, match="positive"):
        BoxCoder((1.0, 0.0, 1.0, 1.0))
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\]"):
        encode_boxes(gt[:, :3], anchors)


def test_empty_inputs():
    empty = torch.zeros(0, 4)
    assert encode_boxes(empty, empty).shape == (0, 4)
    assert decode_boxes(empty, empty).shape == (0, 4)


def test_zero_width_gt_gives_minus_inf():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    gt = torch.tensor([[5.0, 0.0, 5.0, 10.0]])
    assert encode_boxes(gt, anchors)[0, 2] == float("-inf")


coords = st.floats(min_value=-1000, max_value=1000, allow_nan=False, width=64)
sizes = st.floats(min_value=0.5, max_value=800, allow_nan=False, width=64)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(coords, coords, sizes, sizes, coords, coords, sizes, sizes), min_size=1, max_size=20),
    st.sampled_from([DEFAULT_WEIGHTS, (1.0, 1.0, 1.0, 1.0), (3.0, 7.0, 0.5, 2.0)]),
)
def test_round_trip_property(rows, weights):
    # decode(encode(b, a), a) == b whenever the log-size ratio is below the clamp
    t = torch.tensor(rows, dtype=torch.float64)
    anchors = torch.stack((t[:, 0], t[:, 1], t[:, 0] + t[:, 2], t[:, 1] + t[:, 3]), dim=1)
    gt = torch.stack((t[:, 4], t[:, 5], t[:, 4] + t[:, 6], t[:, 5] + t[:, 7]), dim=1)
    coder = BoxCoder(weights)
    deltas = coder.encode(gt, anchors)
    ok = ((deltas[:, 2:] / torch.tensor(weights[2:], dtype=torch.float64)) < BBOX_XFORM_CLIP).all(dim=1)
    back = coder.decode(deltas, anchors)
    torch.testing.assert_close(back[ok], gt[ok], rtol=1e-9, atol=1e-7)
    # and in float32, to float32 precision
    back32 = coder.decode(coder.encode(gt.float(), anchors.float()), anchors.float())
    torch.testing.assert_close(back32[ok], gt[ok].float(), rtol=1e-4, atol=2e-3)
