"""Box invariants of the augmentation pipeline (hypothesis), fused vs unfused, seeds, statistics."""

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cvkit.transforms import MinIoURandomCrop, Pipeline, ZoomOut

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def coordinate_image(height, width):
    """float32 (H, W, 3): each pixel holds its own centre (x + 0.5, y + 0.5) and a 1 (fill is 0)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([xs + 0.5, ys + 0.5, np.ones_like(xs)], axis=-1)


def geometric_pipeline(out_h, out_w, fuse=True, min_box_size=1.0, interpolation=cv2.INTER_NEAREST):
    steps = [
        ZoomOut(max_ratio=3.0, fill=(0, 0, 0), p=0.5),
        MinIoURandomCrop(),
        A.Resize(out_h, out_w, interpolation=interpolation),
        A.HorizontalFlip(p=0.5),
    ]
    return Pipeline(steps, min_box_size=min_box_size, fuse_geometry=fuse)


@st.composite
def scenes(draw, margin=0):
    """(height, width, boxes [N, 4], (out_h, out_w), seed); boxes may reach ``margin`` px outside the image."""
    height, width = draw(st.integers(12, 90)), draw(st.integers(12, 90))
    n = draw(st.integers(0, 6))
    boxes = []
    for _ in range(n):
        x1 = draw(st.floats(-margin, width - 3))
        y1 = draw(st.floats(-margin, height - 3))
        x2 = draw(st.floats(x1 + 2, width + margin))
        y2 = draw(st.floats(y1 + 2, height + margin))
        boxes.append([x1, y1, x2, y2])
    out = (draw(st.integers(12, 90)), draw(st.integers(12, 90)))
    return height, width, np.asarray(boxes, np.float32).reshape(-1, 4), out, draw(st.integers(0, 2**31 - 1))


@PROPERTY
@given(scene=scenes())
def test_boxes_follow_the_pixels_through_every_geometric_step(scene):
    height, width, boxes, (out_h, out_w), seed = scene
    image = coordinate_image(height, width)
    sample = {"image": image, "boxes": torch.from_numpy(boxes), "labels": torch.arange(len(boxes))}
    out = geometric_pipeline(out_h, out_w)(sample, seed=seed)
    result, got, labels = out["image"], out["boxes"].numpy(), out["labels"].numpy()
    assert result.shape == (out_h, out_w, 3)
    # inside the output image, at least min_box_size wide and high, labels still one per box
    assert got.shape == (len(labels), 4) and len(set(labels.tolist())) == len(labels)
    assert (got >= 0).all() and (got[:, 0::2] <= out_w + 1e-4).all() and (got[:, 1::2] <= out_h + 1e-4).all()
    assert ((got[:, 2:] - got[:, :2]) >= 1.0 - 1e-4).all()
    # pixels well inside an output box come from its source box (nearest sampling: one source pixel of slack)
    valid = result[..., 2] > 0
    src_x, src_y = result[..., 0], result[..., 1]
    for (x1, y1, x2, y2), label in zip(got, labels):
        sx1, sy1, sx2, sy2 = boxes[label]
        cols = np.arange(out_w) + 0.5
        rows = np.arange(out_h) + 0.5
        inner = ((rows[:, None] > y1 + 1) & (rows[:, None] < y2 - 1)) & ((cols > x1 + 1) & (cols < x2 - 1))
        inner &= valid
        if not inner.any():
            continue
        slack_x = max(1.0, width / out_w * 4) + 1
        slack_y = max(1.0, height / out_h * 4) + 1
        assert (src_x[inner] >= sx1 - slack_x).all() and (src_x[inner] <= sx2 + slack_x).all()
        assert (src_y[inner] >= sy1 - slack_y).all() and (src_y[inner] <= sy2 + slack_y).all()


@PROPERTY
@given(scene=scenes())
def test_fused_and_unfused_give_the_same_boxes_and_pixels(scene):
    height, width, boxes, (out_h, out_w), seed = scene
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    sample = {"image": image, "boxes": torch.from_numpy(boxes), "labels": torch.arange(len(boxes))}
    fused_pipeline = geometric_pipeline(out_h, out_w, fuse=True, interpolation=cv2.INTER_LINEAR)
    fused = fused_pipeline(sample, seed=seed)
    steps = geometric_pipeline(out_h, out_w, fuse=False, interpolation=cv2.INTER_LINEAR)(sample, seed=seed)
    diff = np.abs(fused["image"].astype(np.int64) - steps["image"].astype(np.int64))
    if not fused_pipeline.transforms[0].params:  # no zoom-out: slice + resize + flip, the very same pixels
        assert diff.max() == 0
    else:  # the canvas shows: padded + resized (the same pixels), or one warp of the image's footprint:
        # bilinear rounding (<= 1 level), and at the window's edges the warp reads the canvas beyond them
        # where the unfused resize repeats the edge pixel (a frame of about half an upscale step)
        x0, y0, x1, y1 = fused_pipeline.transforms[1].params["crop"]
        fx, fy = int(np.ceil(out_w / (x1 - x0) / 2)) + 1, int(np.ceil(out_h / (y1 - y0) / 2)) + 1
        assert diff[fy : out_h - fy, fx : out_w - fx].max(initial=0) <= 1
    assert torch.equal(fused["labels"], steps["labels"])
    assert torch.allclose(fused["boxes"], steps["boxes"], atol=1e-4)


@PROPERTY
@given(scene=scenes())
def test_horizontal_flip_twice_is_the_identity(scene):
    height, width, boxes, _, seed = scene
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    sample = {"image": image, "boxes": torch.from_numpy(boxes), "labels": torch.arange(len(boxes))}
    for fuse in (True, False):
        out = Pipeline([A.HorizontalFlip(p=1.0), A.HorizontalFlip(p=1.0)], fuse_geometry=fuse)(sample)
        assert np.array_equal(out["image"], image)
        assert torch.allclose(out["boxes"], sample["boxes"], atol=1e-4)
        assert torch.equal(out["labels"], sample["labels"])
    once = Pipeline([A.HorizontalFlip(p=1.0)])(sample)
    assert np.array_equal(once["image"], image[:, ::-1])
    expected = torch.stack([width - sample["boxes"][:, 2], sample["boxes"][:, 1], width - sample["boxes"][:, 0],
                            sample["boxes"][:, 3]], dim=1).reshape(-1, 4)
    assert torch.allclose(once["boxes"], expected, atol=1e-4)


def test_clip_then_drop_small_and_hidden_boxes_with_their_labels():
    image = np.zeros((50, 100, 3), np.uint8)
    boxes = torch.tensor(
        [[-10.0, 5.0, 20.0, 25.0],  # partly outside: clipped to 0..20, kept
         [10.0, 10.0, 10.5, 30.0],  # 0.5 px wide: dropped
         [95.0, 40.0, 130.0, 60.0],  # 5 x 10 px visible of 35 x 20: visibility 0.07
         [120.0, 10.0, 140.0, 20.0],  # entirely outside: dropped
         [30.0, 30.0, 40.0, 45.0]]
    )
    labels = torch.tensor([10, 11, 12, 13, 14])
    pipeline = Pipeline([], min_box_size=1.0)
    out = pipeline({"image": image, "boxes": boxes, "labels": labels})
    assert out["labels"].tolist() == [10, 12, 14]
    assert out["boxes"].tolist() == [[0.0, 5.0, 20.0, 25.0], [95.0, 40.0, 100.0, 50.0], [30.0, 30.0, 40.0, 45.0]]
    stats = pipeline.stats["input"]
    assert (stats.boxes_in, stats.clipped, stats.dropped) == (5, 2, 2)
    strict = Pipeline([], min_box_size=6.0, min_visibility=0.5)
    # min 6 px wide and high and at least half visible: box 0 (2/3 visible) and box 4 remain
    assert strict({"image": image, "boxes": boxes, "labels": labels})["labels"].tolist() == [10, 14]
    assert "input" in pipeline.format_stats() and "clipped" in pipeline.format_stats()


def test_statistics_chain_from_step_to_step(synthetic_pipeline_inputs):
    pipeline, samples = synthetic_pipeline_inputs
    pipeline.reset_stats()
    kept = 0
    for i, sample in enumerate(samples):
        kept += len(pipeline(sample, seed=i)["boxes"])
    names = pipeline.step_names
    for before, after in zip(names, names[1:]):
        s, t = pipeline.stats[before], pipeline.stats[after]
        assert t.boxes_in == s.boxes_in - s.dropped
    last = pipeline.stats[names[-1]]
    assert last.boxes_in - last.dropped == kept
    assert pipeline.stats["MinIoURandomCrop"].dropped > 0 and pipeline.stats["input"].calls == len(samples)


@pytest.fixture(scope="module")
def synthetic_pipeline_inputs(synthetic_root):
    from cvkit.data import CocoDetection
    from cvkit.transforms import ssd_train

    ds = CocoDetection(synthetic_root, "annotations/instances_train.json", "images/train")
    return ssd_train(), [ds[i] for i in range(len(ds))]


def test_seeds_inputs_and_outputs(synthetic_pipeline_inputs):
    pipeline, samples = synthetic_pipeline_inputs
    sample = samples[1]
    before = {
        k: (v.copy() if isinstance(v, np.ndarray) else v.clone() if torch.is_tensor(v) else v)
        for k, v in sample.items()
    }
    a, b, c = pipeline(sample, seed=4), pipeline(sample, seed=4), pipeline(sample, seed=5)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["boxes"], b["boxes"])
    assert not torch.equal(a["image"], c["image"])
    for key, value in before.items():  # the input sample is untouched
        assert np.array_equal(np.asarray(value), np.asarray(sample[key]))
    assert (
        a["image"].dtype == torch.uint8
        and a["image"].shape == (3, 300, 300)
        and a["image"].permute(1, 2, 0).is_contiguous()
    )
    assert pipeline.as_tensor and not hasattr(pipeline, "normalize")  # uint8 out: the model normalizes
    from cvkit.models.preprocess import ImageNormalizer

    x = ImageNormalizer()(a["image"].unsqueeze(0))  # what the model's first module makes of it
    assert x.dtype == torch.float32 and x.shape == (1, 3, 300, 300) and x.is_contiguous()
    assert a["boxes"].dtype == torch.float32 and a["labels"].dtype == torch.int64
    assert a["image_id"] == sample["image_id"] and a["orig_size"] == sample["orig_size"]  # passed through


def test_unseeded_pipeline_advances_its_own_generator(synthetic_pipeline_inputs):
    _, samples = synthetic_pipeline_inputs
    from cvkit.transforms import ssd_train

    p, q = ssd_train(seed=11), ssd_train(seed=11)
    first = [p(samples[0])["image"] for _ in range(3)]
    second = [q(samples[0])["image"] for _ in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(first, second))
    assert not torch.equal(first[0], first[1])


def test_any_albumentations_transform_between_fused_steps():
    """A transform the pipeline cannot fuse (here a rotation) ends the fused run and gets the same box rules."""
    image = np.random.default_rng(0).integers(0, 256, (80, 120, 3), dtype=np.uint8)
    boxes = torch.tensor([[5.0, 5.0, 40.0, 30.0], [60.0, 40.0, 118.0, 78.0], [50.0, 10.0, 52.0, 12.0]])
    steps = [ZoomOut(max_ratio=2.0, p=1.0), A.Affine(rotate=(30, 30), p=1.0), A.Resize(50, 60)]
    pipeline = Pipeline(steps, min_box_size=1.0)
    out = pipeline({"image": image, "boxes": boxes, "labels": torch.tensor([0, 1, 2])}, seed=0)
    b = out["boxes"]
    assert out["image"].shape == (50, 60, 3) and len(b) == len(out["labels"]) >= 1
    assert (b >= 0).all() and (b[:, 0::2] <= 60).all() and (b[:, 1::2] <= 50).all()
    assert (
        pipeline.stats["Affine"].applied == 1
        and pipeline.stats["Resize"].boxes_in == len(b) + pipeline.stats["Resize"].dropped
    )


def test_to_chw_tensor_gives_the_planes_the_models_normalize_per_sample_and_in_any_layout():
    from cvkit.models.preprocess import ImageNormalizer
    from cvkit.transforms import to_chw_tensor

    rng = np.random.default_rng(0)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    images = [rng.integers(0, 256, (7, 9, 3), dtype=np.uint8) for _ in range(3)]
    chw = [to_chw_tensor(im) for im in images]
    for im, t in zip(images, chw):
        assert t.dtype == torch.uint8 and t.is_contiguous() and np.array_equal(t.permute(1, 2, 0).numpy(), im)
    normalizer = ImageNormalizer(mean, std)
    batch = normalizer(torch.stack(chw))
    assert batch.dtype == torch.float32 and batch.shape == (3, 3, 7, 9)
    for k, im in enumerate(images):
        want = (im.astype(np.float64) / 255 - mean) / std  # (H, W, 3): the per-sample formula
        assert np.allclose(batch[k].permute(1, 2, 0).numpy(), want, atol=2e-6)
        assert torch.equal(normalizer(chw[k].unsqueeze(0))[0], batch[k])  # one image = its row of the batch
    # a collated batch of channel-last views (the CPU fast path) gives the same values, in the standard layout
    channel_last = torch.stack([torch.from_numpy(im) for im in images]).permute(0, 3, 1, 2)
    fast = normalizer(channel_last)
    assert fast.is_contiguous() and torch.equal(fast, batch)
    assert to_chw_tensor(images[0][:, :, 0]).shape == (1, 7, 9)


# -- every step on its own: the reference rule applied to the pipeline's own previous state ----------------

EPS = 1e-4  # a box this close to a size / visibility threshold may go either way (float rounding)


def _reference_step(t, boxes, size, min_box_size, min_visibility):
    """What step ``t`` (already run, ``t.params`` set) must do to ``boxes`` (pixels of an image of ``size``).

    Returns ``(moved-and-clipped boxes [N, 4], keep mask [N], ambiguous mask [N], new size)``.
    """
    from cvkit.transforms.geometry import map_of

    height, width = size
    keep = np.ones(len(boxes), bool)
    if not t.params:  # the step's probability did not fire
        return boxes, keep, np.zeros(len(boxes), bool), size
    amap, new_size = map_of(t)(t, t.params, size)
    ambiguous = np.zeros(len(boxes), bool)
    if isinstance(t, MinIoURandomCrop):  # the crop keeps the boxes whose centre lies strictly inside its window
        x0, y0, x1, y1 = t.params["crop"]
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        inside = np.minimum.reduce([cx - x0, x1 - cx, cy - y0, y1 - cy])
        keep &= inside > 0
        ambiguous |= np.abs(inside) < EPS
    xs = boxes[:, [0, 2]] * amap.ax + amap.bx
    ys = boxes[:, [1, 3]] * amap.ay + amap.by
    moved = np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], axis=1)
    new_h, new_w = new_size
    clipped = np.clip(moved, 0, [new_w, new_h, new_w, new_h])
    w, h = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    size_margin = np.minimum(w, h) - max(min_box_size, 0.0)
    keep &= (w > 0) & (h > 0) & (size_margin >= 0)
    ambiguous |= np.abs(size_margin) < EPS * max(1.0, new_w, new_h)
    was_clipped = np.abs(clipped - moved).max(1) > 0
    area = (moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1])
    vis_margin = w * h - min_visibility * area
    keep &= ~was_clipped | (min_visibility <= 0) | (vis_margin >= 0)
    ambiguous |= was_clipped & (min_visibility > 0) & (np.abs(vis_margin) < EPS * np.maximum(area, 1.0))
    return clipped, keep, ambiguous, new_size


@PROPERTY
@given(
    scene=scenes(margin=15),
    min_box_size=st.sampled_from([0.0, 1.0, 3.0]),
    min_visibility=st.sampled_from([0.0, 0.3, 0.7]),
    fuse=st.booleans(),
)
def test_every_step_moves_clips_and_filters_boxes_exactly(scene, min_box_size, min_visibility, fuse):
    """After the input and after each geometric step: boxes moved exactly by the step's map, clipped to the
    image, and dropped with their labels exactly when too small or too hidden (``min_visibility``) -- checked
    step by step, each step against the rule applied to the pipeline's own state before it."""
    height, width, boxes, (out_h, out_w), seed = scene
    image = np.zeros((height, width, 3), np.uint8)
    sample = {"image": image, "boxes": torch.from_numpy(boxes), "labels": torch.arange(len(boxes))}
    steps = geometric_pipeline(out_h, out_w).transforms
    # the same seed: a prefix of the steps draws exactly what those steps draw in the whole pipeline
    states = [
        Pipeline(steps[:k], min_box_size=min_box_size, min_visibility=min_visibility, fuse_geometry=fuse)(
            sample, seed=seed
        )
        for k in range(len(steps) + 1)
    ]
    for k, state in enumerate(states):
        got, labels = state["boxes"].numpy().astype(np.float64), state["labels"].numpy()
        h, w = state["image"].shape[:2]
        assert (got >= 0).all() and (got[:, [0, 2]] <= w + 1e-3).all() and (got[:, [1, 3]] <= h + 1e-3).all()
        assert (got[:, 2:] - got[:, :2] >= min_box_size - 1e-3).all() and (got[:, 2:] > got[:, :2]).all()
        assert len(set(labels.tolist())) == len(labels)
        if k == 0:  # the input step: clip and filter the raw boxes
            prev_boxes, prev_labels, size = boxes.astype(np.float64), np.arange(len(boxes)), (height, width)
            want, keep, ambiguous = _input_rule(prev_boxes, size, min_box_size, min_visibility)
        else:
            prev = states[k - 1]
            prev_boxes, prev_labels = prev["boxes"].numpy().astype(np.float64), prev["labels"].numpy()
            # run the whole prefix again so that steps[k - 1].params are this prefix's parameters
            Pipeline(steps[:k], min_box_size=min_box_size, min_visibility=min_visibility, fuse_geometry=fuse)(
                sample, seed=seed
            )
            want, keep, ambiguous, size = _reference_step(
                steps[k - 1], prev_boxes, prev["image"].shape[:2], min_box_size, min_visibility
            )
            assert (h, w) == tuple(size)
        sure = ~ambiguous
        assert set(labels.tolist()) & set(prev_labels[sure].tolist()) == set(prev_labels[sure & keep].tolist())
        for i in np.flatnonzero(keep & sure):
            j = np.flatnonzero(labels == prev_labels[i])
            assert len(j) == 1
            assert np.allclose(got[j[0]], want[i], atol=1e-3 * max(1.0, w / 16, h / 16))


def _input_rule(boxes, size, min_box_size, min_visibility):
    """The pipeline's entry rule: clip to the image, drop too small / too hidden boxes."""
    height, width = size
    clipped = np.clip(boxes, 0, [width, height, width, height])
    w, h = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    size_margin = np.minimum(w, h) - min_box_size
    keep = (w > 0) & (h > 0) & (size_margin >= 0)
    ambiguous = np.abs(size_margin) < EPS * max(width, height)
    was_clipped = np.abs(clipped - boxes).max(1) > 0
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    vis_margin = w * h - min_visibility * area
    keep &= ~was_clipped | (min_visibility <= 0) | (vis_margin >= 0)
    ambiguous |= was_clipped & (min_visibility > 0) & (np.abs(vis_margin) < EPS * np.maximum(area, 1.0))
    return clipped, keep, ambiguous


def test_outputs_never_share_the_reused_photometric_buffer():
    """The photometric step writes into a buffer the pipeline reuses when a resampling follows; an output
    must still own its pixels, also when no geometric step fires (the render is then the identity)."""
    from cvkit.transforms import PhotometricDistort, TransformsConfig, ssd_train

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8) for _ in range(6)]
    boxes = torch.tensor([[5.0, 5.0, 30.0, 25.0]])
    identity_geometry = Pipeline(
        [PhotometricDistort(p=1.0, p_each=1.0), A.Resize(40, 50), A.HorizontalFlip(p=0.0)],
        as_tensor=True,
    )
    for pipeline in (ssd_train(TransformsConfig(size=(32, 32))), identity_geometry):
        outputs, copies = [], []
        for k, image in enumerate(images):
            out = pipeline({"image": image, "boxes": boxes, "labels": torch.tensor([0])}, seed=k)
            outputs.append(out["image"])
            copies.append(out["image"].clone())
        assert all(torch.equal(a, b) for a, b in zip(outputs, copies))  # later calls did not overwrite them
        again = pipeline({"image": images[0], "boxes": boxes, "labels": torch.tensor([0])}, seed=0)
        assert torch.equal(again["image"], copies[0])
    assert not np.array_equal(copies[0].numpy(), images[0].transpose(2, 0, 1))  # the colours did change
