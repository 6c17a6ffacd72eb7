import pytest
import torch
import torchvision.ops as tvo
from hypothesis import given, settings
from hypothesis import strategies as st

from cvkit import ops
from tests.ops._reference import clustered_boxes, random_boxes

FAMILY = [
    ("iou", ops.box_iou, tvo.box_iou),
    ("giou", ops.generalized_box_iou, tvo.generalized_box_iou),
    ("diou", ops.distance_box_iou, tvo.distance_box_iou),
    ("ciou", ops.complete_box_iou, tvo.complete_box_iou),
]
IDS = [f[0] for f in FAMILY]


def _both_paths(fn, a, b):
    """(numba kernel result, torch expression result) for the same inputs."""
    fast = fn(a, b)
    slow = fn(a.clone().requires_grad_(True), b).detach()
    return fast, slow


@pytest.mark.parametrize(("name", "ours", "ref"), FAMILY, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_torchvision_on_valid_boxes(name, ours, ref, dtype):
    a, _ = clustered_boxes(300, seed=1)
    b, _ = clustered_boxes(200, seed=2)
    a, b = a.to(dtype), b.to(dtype)
    fast, slow = _both_paths(ours, a, b)
    expected = ref(a, b)
    assert fast.dtype == dtype and fast.shape == (300, 200)
    tol = {} if name != "ciou" else {"atol": 2e-6, "rtol": 1e-5}
    if name in ("iou", "giou", "diou"):
        assert torch.equal(fast, expected), "numba kernel must reproduce torchvision bit for bit"
    torch.testing.assert_close(fast, expected, **tol)
    torch.testing.assert_close(slow, expected, **tol)


@pytest.mark.parametrize(("name", "ours", "ref"), FAMILY, ids=IDS)
def test_degenerate_boxes_give_numbers_not_nan(name, ours, ref):
    boxes = torch.tensor(
        [[0, 0, 0, 0], [5, 5, 5, 5], [0, 0, 10, 10], [10, 10, 0, 0], [3, 3, 3, 8], [2, 2, 6, 6]], dtype=torch.float32
    )
    fast, slow = _both_paths(ours, boxes, boxes)
    assert torch.isfinite(fast).all() and torch.isfinite(slow).all()
    torch.testing.assert_close(fast, slow, atol=1e-6, rtol=1e-6)
    expected = ref(boxes, boxes)
    finite = torch.isfinite(expected)
    torch.testing.assert_close(fast[finite], expected[finite], atol=1e-6, rtol=1e-6)
    if name == "iou":
        assert fast[0, 0] == 0 and fast[3, 3] == 0  # torchvision: NaN (0/0)
        assert fast[2, 2] == 1


@pytest.mark.parametrize(("name", "ours", "ref"), FAMILY, ids=IDS)
def test_float16_and_large_coordinates(name, ours, ref):
    a = random_boxes(64, seed=3, dtype=torch.float16)
    b = random_boxes(32, seed=4, dtype=torch.float16)
    out = ours(a, b)
    assert out.dtype == torch.float32  # as torchvision: areas are upcast
    torch.testing.assert_close(out, ref(a.float(), b.float()), atol=2e-3, rtol=1e-3)
    big = random_boxes(50, size=1e6, seed=5, dtype=torch.float64) + 1e7
    torch.testing.assert_close(ours(big, big), ref(big, big))


@pytest.mark.parametrize(("name", "ours", "ref"), FAMILY, ids=IDS)
def test_empty_inputs_are_typed(name, ours, ref):
    for n, m in [(0, 5), (5, 0), (0, 0)]:
        out = ours(random_boxes(n), random_boxes(m))
        assert out.shape == (n, m) and out.dtype == torch.float32
    assert ours(torch.zeros(0, 4, dtype=torch.float64), torch.zeros(3, 4, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize(("name", "ours", "ref"), FAMILY, ids=IDS)
def test_inputs_not_mutated_and_batched_leading_dims(name, ours, ref):
    a, b = random_boxes(10, seed=6), random_boxes(7, seed=7)
    a0, b0 = a.clone(), b.clone()
    ours(a, b)
    assert torch.equal(a, a0) and torch.equal(b, b0)
    batched = ours(torch.stack([a, a]), torch.stack([b, b]))
    assert batched.shape == (2, 10, 7)
    torch.testing.assert_close(batched[1], ours(a, b), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("threads", [1, 2])
def test_parallel_kernel_equals_serial(threads):
    a, b = clustered_boxes(800, seed=8)[0], clustered_boxes(700, seed=9)[0]  # above the parallel cut-off
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = ops.box_iou(a, b)
    finally:
        torch.set_num_threads(prev)
    assert torch.equal(out, tvo.box_iou(a, b))


@pytest.mark.parametrize(("name", "ours", "ref"), FAMILY, ids=IDS)
def test_gradcheck_float64(name, ours, ref):
    g = torch.Generator().manual_seed(11)
    xy = torch.rand(4, 2, generator=g, dtype=torch.float64) * 10
    a = torch.cat([xy, xy + 2 + torch.rand(4, 2, generator=g, dtype=torch.float64) * 5], 1).requires_grad_(True)
    xy = torch.rand(3, 2, generator=g, dtype=torch.float64) * 10
    b = torch.cat([xy, xy + 2 + torch.rand(3, 2, generator=g, dtype=torch.float64) * 5], 1).requires_grad_(True)
    if name != "ciou":
        assert torch.autograd.gradcheck(ours, (a, b), eps=1e-6, atol=1e-5)
        return
    # CIoU treats alpha as a constant (no gradient), as the paper and torchvision do, so finite
    # differences cannot match by design: compare with torchvision's autograd gradient instead.
    ga = torch.autograd.grad(ours(a, b).sum(), (a, b))
    gr = torch.autograd.grad(ref(a, b).sum(), (a, b))
    for x, y in zip(ga, gr):
        torch.testing.assert_close(x, y)


def test_gradients_are_finite_on_degenerate_boxes():
    boxes = torch.tensor([[0.0, 0, 0, 0], [1, 1, 4, 4]], dtype=torch.float64, requires_grad=True)
    for _, fn, _ in FAMILY:
        fn(boxes, boxes).sum().backward()
        assert torch.isfinite(boxes.grad).all()
        boxes.grad = None


coord = st.floats(0, 100, allow_nan=False)


@st.composite
def box_sets(draw):
    n = draw(st.integers(1, 8))
    rows = []
    for _ in range(n):
        x, y = draw(coord), draw(coord)
        rows.append([x, y, x + draw(st.floats(0, 50)), y + draw(st.floats(0, 50))])
    return torch.tensor(rows, dtype=torch.float64)


@settings(max_examples=80, deadline=None)
@given(box_sets(), box_sets())
def test_iou_properties(a, b):
    iou = ops.box_iou(a, b)
    assert ((iou >= 0) & (iou <= 1)).all()
    torch.testing.assert_close(iou, ops.box_iou(b, a).T)
    giou = ops.generalized_box_iou(a, b)
    assert ((giou >= -1 - 1e-9) & (giou <= iou + 1e-12)).all()
    torch.testing.assert_close(giou, ops.generalized_box_iou(b, a).T)
    self_iou = ops.box_iou(a, a).diagonal()
    positive = ops.box_area(a) > 0  # not just w, h > 0: w * h can underflow to 0 (subnormal sides)
    assert torch.allclose(self_iou[positive], torch.ones_like(self_iou[positive]))
