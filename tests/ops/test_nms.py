import pytest
import torch
import torchvision.ops as tvo
from hypothesis import given, settings
from hypothesis import strategies as st

from cvkit import ops
from tests.ops._reference import clustered_boxes, py_nms, random_boxes

BACKENDS = ["numba", "torch"]


def _distinct_scores(n, seed=0):
    # a permutation: no ties, so torchvision's (unspecified) tie order cannot matter
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g).float() / n


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", [1, 2, 10, 500, 3000])
@pytest.mark.parametrize("thr", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_nms_matches_torchvision_on_clustered_boxes(backend, n, thr):
    boxes, _ = clustered_boxes(n, seed=n)
    scores = _distinct_scores(n, seed=n)
    assert torch.equal(ops.nms(boxes, scores, thr, backend=backend), tvo.nms(boxes, scores, thr))


@pytest.mark.parametrize("backend", BACKENDS)
def test_nms_matches_python_reference_with_ties(backend):
    boxes, _ = clustered_boxes(400, num_objects=6, seed=3)
    scores = torch.randint(0, 5, (400,)).float()  # many exact ties
    keep = ops.nms(boxes, scores, 0.5, backend=backend)
    assert keep.tolist() == py_nms(boxes, scores, 0.5)
    # equal scores are visited by increasing index
    for a, b in zip(keep[:-1].tolist(), keep[1:].tolist()):
        assert scores[a] > scores[b] or (scores[a] == scores[b] and a < b)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("thr", [0.5, 0.3, 0.7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_iou_exactly_at_threshold(backend, thr, dtype):
    # B lies inside A: IoU(A, B) = w / 10, so w = 10 * (thr + delta) sits at, just above or below thr.
    rows = [[0.0, 0.0, 10.0, 10.0]]
    for delta in (0.0, 1e-5, -1e-5, 2e-6, -2e-6):
        w = 10.0 * (thr + delta)
        rows.append([0.0, 0.0, w, 10.0])
    for i, row in enumerate(rows[1:]):  # each pair on its own, far apart
        rows[i + 1] = [row[0] + 100 * (i + 1), 0.0, row[2] + 100 * (i + 1), 10.0]
    pairs = []
    for i in range(1, len(rows)):
        shift = 100.0 * i
        pairs.append([shift, 0.0, shift + 10.0, 10.0])
        pairs.append(rows[i])
    boxes = torch.tensor(pairs, dtype=dtype)
    scores = torch.linspace(1, 0.1, len(pairs), dtype=dtype)
    keep = ops.nms(boxes, scores, thr, backend=backend)
    assert torch.equal(keep, tvo.nms(boxes, scores, thr))
    assert keep.tolist() == py_nms(boxes, scores, thr) or dtype == torch.float32


@pytest.mark.parametrize("backend", BACKENDS)
def test_degenerate_boxes_and_edge_sizes(backend):
    boxes = torch.tensor(
        [[0, 0, 0, 0], [0, 0, 0, 0], [5, 5, 2, 2], [5, 5, 2, 2], [0, 0, 10, 10], [0, 0, 10, 10], [3, 3, 3, 9]],
        dtype=torch.float32,
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    keep = ops.nms(boxes, scores, 0.5, backend=backend)
    # zero-area and inverted boxes never suppress nor get suppressed; the duplicate valid box goes
    assert keep.tolist() == [0, 1, 2, 3, 4, 6]
    assert torch.equal(keep, tvo.nms(boxes, scores, 0.5))
    empty = ops.nms(torch.zeros(0, 4), torch.zeros(0), 0.5, backend=backend)
    assert empty.dtype == torch.int64 and empty.shape == (0,)
    one = ops.nms(torch.tensor([[1.0, 1, 2, 2]]), torch.tensor([0.3]), 0.5, backend=backend)
    assert one.tolist() == [0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_negative_threshold_keeps_only_the_best(backend):
    boxes = random_boxes(50, seed=2)
    scores = _distinct_scores(50)
    keep = ops.nms(boxes, scores, -0.1, backend=backend)
    assert torch.equal(keep, tvo.nms(boxes, scores, -0.1))


@pytest.mark.parametrize("backend", BACKENDS)
def test_float16_float64_and_large_coordinates(backend):
    boxes, _ = clustered_boxes(800, seed=4)
    scores = _distinct_scores(800, seed=4)
    ref = tvo.nms(boxes.double(), scores.double(), 0.5)
    assert torch.equal(ops.nms(boxes.double(), scores.double(), 0.5, backend=backend), ref)
    # float16 is computed in float32 (torchvision has no CPU float16 NMS)
    half = boxes.half()
    expected = tvo.nms(half.float(), scores.half().float(), 0.5)
    assert torch.equal(ops.nms(half, scores.half(), 0.5, backend=backend), expected)
    big = boxes.double() * 1e3 + 1e8
    assert torch.equal(ops.nms(big, scores.double(), 0.5, backend=backend), tvo.nms(big, scores.double(), 0.5))


def test_100k_boxes_agree_with_torchvision():
    boxes, _ = clustered_boxes(100_000, num_objects=100, size=1333.0, seed=5)
    scores = _distinct_scores(100_000, seed=5)
    assert torch.equal(ops.nms(boxes, scores, 0.5), tvo.nms(boxes, scores, 0.5))


def test_inputs_not_mutated():
    boxes, scores = clustered_boxes(300, seed=6)
    b0, s0 = boxes.clone(), scores.clone()
    ops.nms(boxes, scores, 0.5)
    ops.batched_nms(boxes, scores, torch.zeros(300, dtype=torch.int64), 0.5)
    assert torch.equal(boxes, b0) and torch.equal(scores, s0)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        ops.nms(torch.zeros(3, 5), torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match="scores"):
        ops.nms(torch.zeros(3, 4), torch.zeros(4), 0.5)
    with pytest.raises(ValueError, match="backend"):
        ops.nms(torch.zeros(3, 4), torch.zeros(3), 0.5, backend="gpu")
    with pytest.raises(ValueError, match="idxs"):
        ops.batched_nms(torch.zeros(3, 4), torch.zeros(3), torch.zeros(2, dtype=torch.int64), 0.5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("n", "num_classes"), [(1, 1), (200, 3), (3000, 20), (6000, 80)])
def test_batched_nms_matches_torchvision(backend, n, num_classes):
    boxes, _ = clustered_boxes(n, seed=n)
    scores = _distinct_scores(n, seed=n + 1)
    idxs = torch.randint(0, num_classes, (n,), generator=torch.Generator().manual_seed(n))
    keep = ops.batched_nms(boxes, scores, idxs, 0.5, backend=backend)
    assert torch.equal(keep, tvo.batched_nms(boxes, scores, idxs, 0.5))


@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_nms_sparse_and_negative_class_ids(backend):
    boxes, _ = clustered_boxes(500, seed=8)
    scores = _distinct_scores(500, seed=8)
    idxs = torch.randint(0, 4, (500,)) * 10**9 - 7  # far-apart ids: the sparse-id path
    keep = ops.batched_nms(boxes, scores, idxs, 0.5, backend=backend)
    assert keep.tolist() == py_nms(boxes, scores, 0.5, idxs)


coord = st.floats(0, 60, allow_nan=False, width=32)


@st.composite
def detections(draw):
    n = draw(st.integers(0, 40))
    rows = []
    for _ in range(n):
        x, y = draw(coord), draw(coord)
        rows.append([x, y, x + draw(st.floats(0, 30, width=32)), y + draw(st.floats(0, 30, width=32))])
    boxes = torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)
    scores = torch.tensor(draw(st.lists(st.sampled_from([0.1, 0.2, 0.5, 0.9]), min_size=n, max_size=n)))
    idxs = torch.tensor(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), dtype=torch.int64)
    thr = draw(st.sampled_from([0.0, 0.25, 0.5, 0.75]))
    return boxes, scores.reshape(-1), idxs.reshape(-1), thr


@settings(max_examples=120, deadline=None)
@given(detections())
def test_nms_properties(case):
    boxes, scores, idxs, thr = case
    keep = ops.nms(boxes, scores, thr)
    assert keep.tolist() == py_nms(boxes, scores, thr)
    assert torch.equal(keep, ops.nms(boxes, scores, thr, backend="torch"))
    kept_scores = scores[keep]
    assert (kept_scores[:-1] >= kept_scores[1:]).all()  # sorted by decreasing score
    iou = ops.box_iou(boxes[keep], boxes[keep])
    assert (iou.triu(1) <= thr).all()  # kept boxes do not suppress each other
    again = ops.nms(boxes[keep], scores[keep], thr)
    assert torch.equal(keep[again], keep)  # NMS of the kept set is the kept set
    batched = ops.batched_nms(boxes, scores, idxs, thr)
    merged = []
    for c in idxs.unique().tolist():
        members = torch.where(idxs == c)[0]
        merged += members[ops.nms(boxes[members], scores[members], thr)].tolist()
    assert sorted(merged, key=lambda i: (-float(scores[i]), i)) == batched.tolist()
    assert torch.equal(batched, ops.batched_nms(boxes, scores, idxs, thr, backend="torch"))


@pytest.mark.cuda
def test_cuda_matches_cpu():
    boxes, _ = clustered_boxes(20000, num_objects=300, seed=9)
    scores = torch.randint(0, 1000, (20000,)).float()  # with ties
    idxs = torch.randint(0, 80, (20000,))
    cpu = ops.nms(boxes, scores, 0.5)
    assert torch.equal(ops.nms(boxes.cuda(), scores.cuda(), 0.5).cpu(), cpu)
    cpu_b = ops.batched_nms(boxes, scores, idxs, 0.5)
    assert torch.equal(ops.batched_nms(boxes.cuda(), scores.cuda(), idxs.cuda(), 0.5).cpu(), cpu_b)
