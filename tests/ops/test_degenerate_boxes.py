"""Every op on every valid box (``x1 <= x2``, ``y1 <= y2``): points, zero-width and zero-height boxes, huge
and negative coordinates, each dtype the op accepts, both backends (issue 16, item 2).

Oracle: torchvision wherever its value is finite; elsewhere (it divides 0 by 0) cvkit's documented value
(``cvkit.ops.boxes`` module docstring; ``py_pairwise`` computes it in plain Python). Integer and float16 boxes
are compared with torchvision run on the dtype cvkit computes them in (float32, float64 for int64):
torchvision's own integer arithmetic wraps around in uint8/int16/int32 and rounds int64 centres to float32.
"""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.ops as tvo
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder
from torchvision.models.detection._utils import Matcher, SSDMatcher

from cvkit import ops
from cvkit.losses.multibox import elementwise_giou
from cvkit.ops.coder import BBOX_XFORM_CLIP, DEFAULT_WEIGHTS, decode_boxes, encode_boxes
from tests.ops._reference import py_pairwise

INT_DTYPES = [torch.int64, torch.int32, torch.int16, torch.uint8]
FLOAT_DTYPES = [torch.float32, torch.float64, torch.float16]
DTYPES = FLOAT_DTYPES + INT_DTYPES
DTYPE_IDS = [str(d).removeprefix("torch.") for d in DTYPES]

# dtype -> (largest |coordinate|, largest side): as large as the dtype holds without overflow in torchvision
# (float16: 65504; the int32 areas of torchvision's box_iou: 2^31)
LIMITS = {
    torch.float64: (1e7, 1e6),
    torch.float32: (1e7, 1e6),
    torch.float16: (1000, 1000),
    torch.int64: (10**7, 10**6),
    torch.int32: (10**4, 10**4),
    torch.int16: (8000, 8000),
    torch.uint8: (127, 128),
}


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype cvkit computes boxes of ``dtype`` in."""
    return torch.float64 if dtype in (torch.float64, torch.int64) else torch.float32


def out_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _number(lo: float, hi: float, integer: bool) -> st.SearchStrategy:
    if integer:
        return st.integers(math.ceil(lo), math.floor(hi))
    return st.floats(lo, hi, allow_nan=False, allow_subnormal=False)


@st.composite
def valid_boxes(draw, dtype: torch.dtype, min_n: int = 1, max_n: int = 8, n: int | None = None) -> torch.Tensor:
    """``[n, 4]`` valid boxes of ``dtype``: many points, zero-width, zero-height and duplicate boxes; coordinates
    near the origin, negative, or huge (1e6..1e7 where the dtype holds it)."""
    coord_lim, side_lim = LIMITS[dtype]
    integer = not dtype.is_floating_point
    lo = 0 if dtype == torch.uint8 else -coord_lim
    coords = [_number(max(lo, -100), 100, integer), _number(lo, coord_lim, integer)]
    if coord_lim >= 1e7:
        coords += [_number(1e6, 1e7, integer), _number(-1e7, -1e6, integer)]
    coord = st.one_of(coords)
    side = st.one_of(st.just(0), _number(0, 1, integer), _number(0, 100, integer), _number(0, side_lim, integer))
    count = draw(st.integers(min_n, max_n)) if n is None else n
    rows: list[list[float]] = []
    for _ in range(count):
        kind = draw(st.sampled_from(("point", "zero_w", "zero_h", "box", "box", "copy")))
        if kind == "copy" and rows:
            rows.append(list(rows[draw(st.integers(0, len(rows) - 1))]))
            continue
        x, y = draw(coord), draw(coord)
        w = 0 if kind in ("point", "zero_w") else draw(side)
        h = 0 if kind in ("point", "zero_h") else draw(side)
        rows.append([x, y, x + w, y + h])
    return torch.tensor(rows, dtype=torch.float64).reshape(count, 4).to(dtype)


def _tol(dtype: torch.dtype) -> dict[str, float]:
    return {"atol": 1e-9, "rtol": 1e-9} if dtype == torch.float64 else {"atol": 2e-6, "rtol": 1e-5}


# ---------------------------------------------------------------------------------------------
# Pairwise IoU family: numba kernel and torch path
# ---------------------------------------------------------------------------------------------

FAMILY = [
    ("iou", ops.box_iou, tvo.box_iou),
    ("giou", ops.generalized_box_iou, tvo.generalized_box_iou),
    ("diou", ops.distance_box_iou, tvo.distance_box_iou),
    ("ciou", ops.complete_box_iou, tvo.complete_box_iou),
]
FAMILY_IDS = [f[0] for f in FAMILY]


def both_paths(fn, a, b, **kw):
    """{"numba": the CPU kernel's result, "torch": the torch expressions' (what CUDA and autograd run)}.

    ``_use_cpu_kernel`` picks the kernel for 2-D CPU inputs without grad; a leading batch dimension takes the
    torch path on CPU.
    """
    return {"numba": fn(a, b, **kw), "torch": fn(a[None], b[None], **kw)[0]}


def check_against_oracles(name, ref, a, b, results, eps=None):
    kw = {} if eps is None else {"eps": eps}
    work = work_dtype(a.dtype)
    expected = ref(a.to(work), b.to(work), **kw).to(out_dtype(a.dtype))
    documented = py_pairwise(name, a.to(work), b.to(work), 1e-7 if eps is None else eps).to(expected.dtype)
    finite = torch.isfinite(expected)
    for path, out in results.items():
        assert out.dtype == out_dtype(a.dtype), path
        assert out.shape == (a.shape[0], b.shape[0]), path
        assert torch.isfinite(out).all(), f"{path}: {out}"
        msg = lambda m, path=path: f"{path}: {m}"  # noqa: E731
        torch.testing.assert_close(out[finite], expected[finite], **_tol(a.dtype), msg=msg)
        torch.testing.assert_close(out[~finite], documented[~finite], **_tol(a.dtype), msg=msg)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize(("name", "ours", "ref"), FAMILY, ids=FAMILY_IDS)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_iou_family_on_degenerate_boxes(name, ours, ref, dtype, data):
    a = data.draw(valid_boxes(dtype), label="boxes1")
    shared = data.draw(st.integers(0, a.shape[0]), label="rows of boxes1 in boxes2")
    b = torch.cat([a[:shared], data.draw(valid_boxes(dtype, min_n=0), label="more boxes2")])
    eps = None if name in ("iou", "giou") else data.draw(st.sampled_from([1e-7, 0.0]), label="eps")
    kw = {} if eps is None else {"eps": eps}
    a0, b0 = a.clone(), b.clone()
    results = both_paths(ours, a, b, **kw)
    assert torch.equal(a, a0) and torch.equal(b, b0)
    check_against_oracles(name, ref, a, b, results, eps)


@pytest.mark.parametrize(("name", "ours", "ref"), FAMILY, ids=FAMILY_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_iou_family_parallel_kernel_on_degenerate_boxes(name, ours, ref, dtype):
    # 96 x 96 pairs: above the kernel's parallel cut-off (the hypothesis cases run the serial kernel)
    g = torch.Generator().manual_seed(16)
    xy = torch.randint(-5, 6, (96, 2), generator=g).to(dtype) * torch.tensor([1.0, 1e6, 1e7, 0.5], dtype=dtype)[
        torch.randint(0, 4, (96, 1), generator=g)
    ]
    wh = torch.randint(0, 4, (96, 2), generator=g).to(dtype)
    wh[::3, 0] = 0
    wh[1::4, 1] = 0
    boxes = torch.cat([xy, xy + wh], dim=1)
    for eps in (1e-7, 0.0):
        kw = {} if name in ("iou", "giou") else {"eps": eps}
        check_against_oracles(name, ref, boxes, boxes, both_paths(ours, boxes, boxes, **kw), kw.get("eps"))


def test_complete_box_iou_of_a_zero_height_box_is_torchvision_s():
    # the example: the numba kernel raised ZeroDivisionError at atan(w / h)
    line = torch.tensor([[0.0, 0.0, 10.0, 0.0]])
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    for a, b in [(line, box), (box, line)]:
        for out in both_paths(ops.complete_box_iou, a, b).values():
            torch.testing.assert_close(out, tvo.complete_box_iou(a, b))


def test_documented_values_where_torchvision_gives_nan():
    p, q = torch.tensor([[5.0, 5.0, 5.0, 5.0]]), torch.tensor([[8.0, 9.0, 8.0, 9.0]])
    v_line = torch.tensor([[5.0, 0.0, 5.0, 4.0]])  # zero width, on the same vertical as p
    for path in ("numba", "torch"):
        assert both_paths(ops.box_iou, p, p)[path].item() == 0  # union 0 -> IoU 0
        assert both_paths(ops.generalized_box_iou, p, q)[path].item() == -1  # enclosing area 25, union 0
        assert both_paths(ops.generalized_box_iou, p, v_line)[path].item() == 0  # enclosing area 0: no penalty
        assert both_paths(ops.distance_box_iou, p, p, eps=0.0)[path].item() == 0  # zero diagonal: no penalty
        assert both_paths(ops.complete_box_iou, p, p, eps=0.0)[path].item() == 0  # atan(0/0) = 0, alpha = 0
        # a point's aspect term is 0, a zero-height box's pi/2: v = 1, alpha = 1 / (1 + 1 + eps)
        torch.testing.assert_close(
            both_paths(ops.complete_box_iou, p, torch.tensor([[5.0, 5.0, 7.0, 5.0]]))[path],
            torch.tensor([[-1 / (4 + 1e-7) - 1 / (2 + 1e-7)]]),
        )
    for a, b in [(p, p), (p, q), (p, v_line)]:
        for *_, ref in FAMILY:
            assert torch.isnan(ref(a, b)).all()  # what torchvision gives there


@pytest.mark.parametrize(("name", "ours", "ref"), FAMILY, ids=FAMILY_IDS)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_iou_family_gradients_are_finite_on_degenerate_boxes(name, ours, ref, data):
    a = data.draw(valid_boxes(torch.float64)).requires_grad_(True)
    b = data.draw(valid_boxes(torch.float64)).requires_grad_(True)
    kw = {} if name in ("iou", "giou") else {"eps": data.draw(st.sampled_from([1e-7, 0.0]))}
    grads = torch.autograd.grad(ours(a, b, **kw).sum(), (a, b))
    assert all(torch.isfinite(g).all() for g in grads)


# ---------------------------------------------------------------------------------------------
# Element-wise box ops
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_box_convert_area_clip_and_remove_small_equal_torchvision(dtype, data):
    boxes = data.draw(valid_boxes(dtype))
    for fmt in ("xywh", "cxcywh"):
        ours, theirs = ops.box_convert(boxes, "xyxy", fmt), tvo.box_convert(boxes, "xyxy", fmt)
        assert ours.dtype == theirs.dtype and torch.equal(ours, theirs)
        assert torch.equal(ops.box_convert(ours, fmt, "xyxy"), tvo.box_convert(theirs, fmt, "xyxy"))
    for fmt in ("xywh", "cxcywh"):
        other = tvo.box_convert(boxes, "xyxy", fmt)
        assert torch.equal(ops.box_convert(other, fmt, "xyxy"), tvo.box_convert(other, fmt, "xyxy"))
    area = ops.box_area(boxes)
    assert area.dtype == tvo.box_area(boxes).dtype and torch.equal(area, tvo.box_area(boxes))
    assert (area >= 0).all()
    largest = 255 if dtype == torch.uint8 else 500  # a uint8 clamp bound must be a uint8 (torchvision's too)
    height, width = data.draw(st.integers(0, largest)), data.draw(st.integers(0, largest))
    assert torch.equal(ops.clip_boxes_to_image(boxes, (height, width)), tvo.clip_boxes_to_image(boxes, (height, width)))
    min_size = data.draw(st.sampled_from([0.0, 0.5, 1.0, 10.0]))
    assert torch.equal(ops.remove_small_boxes(boxes, min_size), tvo.remove_small_boxes(boxes, min_size))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.int32], ids=str)
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_elementwise_giou_of_the_loss(dtype, data):
    a = data.draw(valid_boxes(dtype))
    pick = data.draw(st.lists(st.integers(0, a.shape[0] - 1), min_size=a.shape[0], max_size=a.shape[0]))
    b = torch.where(
        torch.tensor(data.draw(st.lists(st.booleans(), min_size=a.shape[0], max_size=a.shape[0])))[:, None],
        a[pick],
        data.draw(valid_boxes(dtype, n=a.shape[0])),
    )
    ours = elementwise_giou(a, b)
    work = work_dtype(dtype)
    expected = 1 - tvo.generalized_box_iou_loss(a.to(work), b.to(work), reduction="none")
    assert ours.dtype == out_dtype(dtype)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, expected.to(ours.dtype), **_tol(dtype))
    # and its gradient, which the GIoU box loss backpropagates (in float32: a zero-area hull gives 1 / eps,
    # torchvision's formula, which a float16 leaf cannot hold)
    if dtype in (torch.float32, torch.float64):
        a = a.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(elementwise_giou(a, b).sum(), (a,))
        assert torch.isfinite(grad).all()


# ---------------------------------------------------------------------------------------------
# Box coder
# ---------------------------------------------------------------------------------------------

WEIGHTS = [DEFAULT_WEIGHTS, (1.0, 1.0, 1.0, 1.0), (3.0, 7.0, 0.5, 2.0)]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_box_coder_on_degenerate_boxes(dtype, data):
    anchors = data.draw(valid_boxes(dtype), label="anchors")
    n = anchors.shape[0]
    pick = data.draw(st.lists(st.integers(0, n - 1), min_size=n, max_size=n))
    gt = torch.where(
        torch.tensor(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))[:, None],
        anchors[pick],
        data.draw(valid_boxes(dtype, n=n), label="gt"),
    )
    weights = data.draw(st.sampled_from(WEIGHTS), label="weights")
    deltas = encode_boxes(gt, anchors, weights)
    expected = TVBoxCoder(weights).encode_single(gt, anchors)
    # torchvision's value where it is a number (finite or not); 0 where it is 0/0 (NaN)
    assert not torch.isnan(deltas).any()
    number = ~torch.isnan(expected)
    tol = {"atol": 1e-3, "rtol": 1e-3} if dtype == torch.float16 else _tol(dtype)
    torch.testing.assert_close(deltas[number], expected[number], **tol)
    assert (deltas[~number] == 0).all()

    # decode(encode(b, a), a) == b for anchors of positive size whose log-size ratio is below the clamp
    # (a zero-size ground truth encodes to dw = -inf or dh = -inf and decodes back to its zero size)
    a_wh = anchors[:, 2:] - anchors[:, :2]
    log_ratio = deltas[:, 2:] / torch.tensor(weights[2:], dtype=dtype)
    ok = (a_wh > 0).all(dim=1) & torch.isfinite(deltas[:, :2]).all(dim=1) & (log_ratio < BBOX_XFORM_CLIP).all(dim=1)
    back = decode_boxes(deltas, anchors, weights)
    scale = torch.cat([anchors, gt], dim=1).abs().amax(dim=1, keepdim=True).to(torch.float64) + 1
    err = (back.to(torch.float64) - gt.to(torch.float64)).abs()
    assert (err[ok] <= 16 * torch.finfo(dtype).eps * scale[ok]).all(), (err[ok], scale[ok])


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_decoding_finite_deltas_on_degenerate_anchors_gives_valid_boxes(dtype, data):
    anchors = data.draw(valid_boxes(dtype))
    values = st.floats(-6, 6, allow_nan=False, allow_subnormal=False)
    n = anchors.shape[0]
    deltas = torch.tensor(data.draw(st.lists(values, min_size=4 * n, max_size=4 * n)), dtype=dtype).reshape(n, 4)
    weights = data.draw(st.sampled_from(WEIGHTS))
    boxes = decode_boxes(deltas, anchors, weights)
    if dtype != torch.float16:  # float16 products of huge deltas and sizes overflow, as torchvision's do
        assert torch.isfinite(boxes).all()
        assert (boxes[:, 2:] >= boxes[:, :2]).all()
    expected = TVBoxCoder(weights).decode_single(deltas, anchors)
    torch.testing.assert_close(boxes, expected, equal_nan=True, **({} if dtype == torch.float16 else _tol(dtype)))


# ---------------------------------------------------------------------------------------------
# NMS: nms, batched_nms, multiclass_nms
# ---------------------------------------------------------------------------------------------

NMS_BACKENDS = ["numba", "torch"]


@st.composite
def nms_boxes(draw, dtype, max_n=80):
    """Boxes on a small lattice (many overlaps, duplicates, IoUs on the thresholds), sides 0..6 units, at the
    origin or shifted far out; rounding of huge coordinates in float32 adds more zero-size boxes."""
    n = draw(st.integers(1, max_n))
    unit = draw(st.sampled_from([1.0, 0.25, 1000.0]))
    offset = draw(st.sampled_from([0.0, -50.0, 1e6, -1e7 + 7]))
    if dtype == torch.float16:  # keep to float16's range
        unit, offset = min(unit, 8.0), min(max(offset, -50.0), 0.0)
    cell = st.integers(0, 12)
    size = st.sampled_from([0, 0, 1, 2, 3, 4, 6])
    rows = []
    for _ in range(n):
        x, y, w, h = draw(cell), draw(cell), draw(size), draw(size)
        rows.append([offset + x * unit, offset + y * unit, offset + (x + w) * unit, offset + (y + h) * unit])
    perm = draw(st.permutations(range(n)))
    scores = (torch.tensor(perm, dtype=torch.float64) + 1) / n  # distinct: torchvision's tie order is unspecified
    return torch.tensor(rows, dtype=torch.float64).to(dtype), scores.float()


def _zero_area(boxes: torch.Tensor) -> torch.Tensor:
    b = boxes.float() if boxes.dtype == torch.float16 else boxes
    return ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])) == 0


def per_class_nms(boxes, scores, idxs, thr):
    """torchvision's nms class by class, merged by decreasing score (not torchvision's batched_nms: its
    coordinate offset trick rounds huge float32 coordinates and lets negative ones of two classes overlap)."""
    scores = scores.to(boxes.dtype)  # torchvision's kernel needs one dtype
    keep = [idx[tvo.nms(boxes[idx], scores[idx], thr)] for idx in (torch.where(idxs == c)[0] for c in idxs.unique())]
    keep = torch.cat(keep)
    return keep[torch.sort(scores[keep], descending=True, stable=True)[1]]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_nms_and_batched_nms_on_degenerate_boxes(dtype, data):
    boxes, scores = data.draw(nms_boxes(dtype))
    thr = data.draw(st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]))
    work = boxes.float() if dtype == torch.float16 else boxes
    expected = tvo.nms(work, scores.to(work.dtype), thr)
    zero_area = torch.where(_zero_area(boxes))[0]
    idxs = torch.tensor(data.draw(st.lists(st.integers(0, 2), min_size=len(scores), max_size=len(scores))))
    expected_batched = per_class_nms(work, scores, idxs, thr)
    for backend in NMS_BACKENDS:
        keep = ops.nms(boxes, scores, thr, backend=backend)
        assert keep.tolist() == expected.tolist(), backend
        assert set(zero_area.tolist()) <= set(keep.tolist())  # IoU 0 with everything: never suppressed
        keep_b = ops.batched_nms(boxes, scores, idxs, thr, backend=backend)
        assert keep_b.tolist() == expected_batched.tolist(), backend


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_multiclass_nms_on_degenerate_boxes(data):
    dtype = data.draw(st.sampled_from(FLOAT_DTYPES))
    num_images = data.draw(st.integers(1, 2))
    per_image = [data.draw(nms_boxes(dtype, max_n=40)) for _ in range(num_images)]
    n = min(b.shape[0] for b, _ in per_image)
    boxes = torch.stack([b[:n] for b, _ in per_image])  # (B, N, 4)
    num_classes = data.draw(st.integers(1, 3))
    total = num_images * n * num_classes
    perm = torch.tensor(data.draw(st.permutations(range(total))), dtype=torch.float64)
    scores = ((perm + 1) / total).float().reshape(num_images, n, num_classes)
    iou_thresh = data.draw(st.sampled_from([0.0, 0.5, 1.0]))
    max_det = data.draw(st.sampled_from([5, 1000]))
    work = boxes.float() if dtype == torch.float16 else boxes
    results = {
        b: ops.multiclass_nms(boxes, scores, 0.0, iou_thresh, -1, max_det, backend=b) for b in NMS_BACKENDS
    }
    for i in range(num_images):
        anchor = torch.arange(n).repeat_interleave(num_classes)
        label = torch.arange(num_classes).repeat(n)
        flat = scores[i].reshape(-1)
        keep = per_class_nms(work[i][anchor], flat, label, iou_thresh)[:max_det]
        columns = [work[i][anchor[keep]], flat[keep, None].to(work.dtype), label[keep, None].to(work.dtype)]
        expected = torch.cat(columns, dim=1)
        for backend, result in results.items():
            got = result.split()[i]
            assert torch.equal(got, expected), backend
    for method in ("linear", "gaussian"):
        soft = {b: ops.multiclass_nms(boxes, scores, 0.0, iou_thresh, -1, max_det, soft_nms=method, backend=b)
                for b in NMS_BACKENDS}
        for result in soft.values():
            assert torch.isfinite(result.detections).all()
        assert torch.equal(soft["numba"].num_detections, soft["torch"].num_detections)
        torch.testing.assert_close(soft["numba"].detections, soft["torch"].detections, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Matcher
# ---------------------------------------------------------------------------------------------


def tv_matcher(anchors, gt_boxes, gt_valid, low_quality, pos, neg):
    """torchvision's SSDMatcher / Matcher image by image on the valid rows, fed cvkit's box_iou in cvkit's
    work dtype (torchvision's box_iou is NaN for pairs of zero-area boxes, which its matcher cannot take)."""
    out = []
    work = work_dtype(torch.promote_types(anchors.dtype, gt_boxes.dtype))
    for b in range(gt_boxes.shape[0]):
        idx = torch.nonzero(gt_valid[b]).flatten()
        if idx.numel() == 0:
            out.append(torch.full((anchors.shape[0],), -1, dtype=torch.long))
            continue
        quality = ops.box_iou(gt_boxes[b, idx].to(work), anchors.to(work))
        if low_quality == "ssd":
            m = SSDMatcher(pos)(quality)
        else:
            m = Matcher(pos, neg, allow_low_quality_matches=low_quality == "rcnn")(quality)
        out.append(torch.where(m >= 0, idx[m.clamp(min=0)], m))
    return torch.stack(out)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES + [torch.int32], ids=str)
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_match_anchors_on_degenerate_boxes(dtype, data):
    anchors = data.draw(valid_boxes(dtype, max_n=30), label="anchors")
    batch = data.draw(st.integers(1, 2))
    num_gt = data.draw(st.integers(1, 5))
    gts = []
    for _ in range(batch):  # ground truth: some anchors themselves (IoU 1), the rest new degenerate boxes
        own = data.draw(valid_boxes(dtype, n=num_gt))
        pick = data.draw(st.lists(st.integers(0, anchors.shape[0] - 1), min_size=num_gt, max_size=num_gt))
        use = torch.tensor(data.draw(st.lists(st.booleans(), min_size=num_gt, max_size=num_gt)))
        gts.append(torch.where(use[:, None], anchors[pick], own))
    gt_boxes = torch.stack(gts)
    gt_valid = torch.tensor(data.draw(st.lists(st.booleans(), min_size=batch * num_gt, max_size=batch * num_gt)))
    gt_valid = gt_valid.reshape(batch, num_gt)
    low_quality = data.draw(st.sampled_from(["ssd", "rcnn", "none"]))
    pos, neg = (0.5, 0.5) if low_quality == "ssd" else data.draw(st.sampled_from([(0.5, 0.5), (0.7, 0.3), (0.5, 0.4)]))
    kw = {"pos_thresh": pos, "neg_thresh": neg, "low_quality": low_quality}
    fast = ops.match_anchors(anchors, gt_boxes, gt_valid, backend="numba", **kw)
    slow = ops.match_anchors(anchors, gt_boxes, gt_valid, backend="torch", **kw)
    for name, x, y in zip(fast._fields, fast, slow):
        assert torch.equal(x, y), name
        assert not (x.is_floating_point() and torch.isnan(x).any()), name
    assert torch.equal(fast.matched_idxs, tv_matcher(anchors, gt_boxes, gt_valid, low_quality, pos, neg))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nms_grid_of_tiny_boxes_spread_far_apart(dtype):
    # more than the grid's segment cut-off; span / mean width ~ 1e37 exceeds int64 when sizing the grid
    g = torch.Generator().manual_seed(5)
    xy = torch.rand(200, 2, generator=g, dtype=torch.float64) * 1e7
    boxes = torch.cat([xy, xy + 1e-30], dim=1)
    boxes[::7] = torch.tensor([0.0, 0.0, 1e-30, 1e-30], dtype=torch.float64)  # duplicates: IoU 1 in float64
    boxes = boxes.to(dtype)
    scores = torch.rand(200, generator=g, dtype=dtype)
    idxs = torch.randint(0, 3, (200,), generator=g)
    for backend in NMS_BACKENDS:
        assert ops.nms(boxes, scores, 0.5, backend=backend).tolist() == tvo.nms(boxes, scores, 0.5).tolist()
        expected = per_class_nms(boxes, scores, idxs, 0.5).tolist()
        assert ops.batched_nms(boxes, scores, idxs, 0.5, backend=backend).tolist() == expected


def test_soft_nms_decayed_score_tying_another_one_in_float32():
    # float64 boxes, float32 scores: linear decay 6/7 * (1 - 1/3) = 4/7 ties the next score exactly once rounded
    boxes = torch.tensor([[[0.0, 0.0, 1.0, 3.0], [0.0, 0.0, 1.0, 1.0], [5.0, 5.0, 6.0, 6.0]]], dtype=torch.float64)
    scores = torch.tensor([[[1.0], [6 / 7], [4 / 7]]])
    out = {b: ops.multiclass_nms(boxes, scores, 0.0, 0.0, soft_nms="linear", backend=b) for b in NMS_BACKENDS}
    assert torch.equal(out["numba"].detections, out["torch"].detections)
    assert out["numba"].detections[0, 1, 4] == out["numba"].detections[0, 2, 4]  # the tie


@pytest.mark.parametrize("low_quality", ["ssd", "rcnn", "none"])
def test_match_anchors_in_normalized_coordinates(low_quality):
    # anchors whose largest side is under 1 have a negative size class in the numba index; they used to be
    # taken for degenerate ones and left out (every anchor of a normalized SSD set: IoU 0, no positives)
    anchors = ops.AnchorGenerator.ssd300()([(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)], (300, 300)) / 300
    g = torch.Generator().manual_seed(3)
    pick = torch.randint(0, anchors.shape[0], (2, 6), generator=g)
    gt = anchors[pick] + (torch.rand(2, 6, 4, generator=g) - 0.5) * 0.02
    gt = torch.cat([torch.minimum(gt[..., :2], gt[..., 2:]), torch.maximum(gt[..., :2], gt[..., 2:])], dim=-1)
    valid = torch.ones(2, 6, dtype=torch.bool)
    pos, neg = (0.5, 0.5) if low_quality == "ssd" else (0.5, 0.4)
    kw = {"pos_thresh": pos, "neg_thresh": neg, "low_quality": low_quality}
    fast = ops.match_anchors(anchors, gt, valid, backend="numba", **kw)
    slow = ops.match_anchors(anchors, gt, valid, backend="torch", **kw)
    for name, x, y in zip(fast._fields, fast, slow):
        assert torch.equal(x, y), name
    assert torch.equal(fast.matched_idxs, tv_matcher(anchors, gt, valid, low_quality, pos, neg))
    assert (fast.gt_best_iou > 0.5).all()
