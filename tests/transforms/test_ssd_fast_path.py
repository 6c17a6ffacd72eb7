"""The compiled SSD path (``SSDTrainPipeline``, :mod:`cvkit.transforms.ssd_fast`) against its reference, the
step-by-step loop of ``Pipeline``, and the draw protocol of the SSD transforms (fixed draw counts, the seeded
crop search)."""

import functools

import albumentations as A
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cvkit.transforms import (
    MinIoURandomCrop,
    PhotometricDistort,
    Pipeline,
    SSDTrainPipeline,
    TransformsConfig,
    ZoomOut,
    build_transform,
    ssd_train,
)
from cvkit.transforms._kernels import (
    CROP_DRAWS,
    PHOTOMETRIC_DRAWS,
    SSD_CONFIG_DTYPE,
    ZOOM_OUT_DRAWS,
    SSDConfig,
    SSDDraws,
    photometric_params,
    search_crop_window,
    splitmix_uniforms,
    ssd_sample,
    zoom_out_params,
)
from cvkit.transforms.ssd_fast import STEP_TOTALS_DTYPE, is_ssd_sequence
from tests.transforms.test_ssd_transforms import crop_reference

MASK64 = (1 << 64) - 1


def splitmix_reference(u, count):
    """SplitMix64 written plainly with Python integers, seeded by the 53 bits of ``u``."""
    state, out = int(u * 2.0**53), []
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        z ^= z >> 31
        out.append((z >> 11) / 2.0**53)
    return np.array(out)


def test_splitmix_uniforms_match_the_plain_generator():
    for u in (0.0, 0.5, 0.123456789, 1 - 2**-53):
        np.testing.assert_array_equal(splitmix_uniforms(u, 300), splitmix_reference(u, 300))
    draws = splitmix_uniforms(0.25, 20000)
    assert draws.min() >= 0 and draws.max() < 1 and abs(draws.mean() - 0.5) < 0.01


@settings(max_examples=60, deadline=None)
@given(
    u=st.floats(0, 1, exclude_max=True), num_boxes=st.integers(0, 4), width=st.integers(8, 300),
    height=st.integers(8, 300), trials=st.integers(1, 20), max_rounds=st.integers(1, 6),
    box_seed=st.integers(0, 2**32 - 1),
)
def test_seeded_crop_search_is_the_plain_rule_on_the_splitmix_stream(
    u, num_boxes, width, height, trials, max_rounds, box_seed
):
    rng = np.random.default_rng(box_seed)
    xy = rng.uniform(0, 1, size=(num_boxes, 2)) * (width, height)
    wh = rng.uniform(1, 0.8 * min(width, height), size=(num_boxes, 2))
    boxes = np.concatenate([xy, np.minimum(xy + wh, (width, height))], axis=1)
    min_ious = np.array([0.1, 0.3, 0.5, 0.7, 0.9, 1.0])
    # round r uses uniform r * (1 + 4 trials) for its IoU choice, then 4 trials window uniforms
    stream = splitmix_reference(u, max_rounds * (1 + 4 * trials)).reshape(max_rounds, 1 + 4 * trials)
    choices = min_ious[(stream[:, 0] * len(min_ious)).astype(int)]
    want = crop_reference(stream[:, 1:].reshape(max_rounds, trials, 4), choices, boxes, width, height, 0.3, 2.0)
    got = search_crop_window(u, min_ious, boxes, width, height, 0.3, 2.0, trials, max_rounds)
    assert tuple(int(v) for v in got) == want


def test_photometric_params_rule():
    args = (0.5, 1.5, 0.6, 1.4, 0.7, 1.3, 0.05, True, 0.5)
    u = np.array([0.1, 0.25, 0.9, 0.0, 0.3, 0.5, 0.2, 1.0 - 1e-12, 0.4, 0.99, 0.0])
    b, c, s, h, *perm = photometric_params(u, *args)
    assert b == pytest.approx(0.75) and c == 1.0 and s == pytest.approx(1.0) and h == pytest.approx(0.05)
    # Fisher-Yates: i = 2 swaps with int(0.99 * 3) = 2 (stays), i = 1 with int(0.0 * 2) = 0
    assert perm == [1, 0, 2]
    # every order of the channels is equally likely (torch.randperm), the identity included
    rng = np.random.default_rng(0)
    counts = {}
    for _ in range(6000):
        *_, p0, p1, p2 = photometric_params(rng.random(PHOTOMETRIC_DRAWS), *args[:-1], 1.0)
        counts[(p0, p1, p2)] = counts.get((p0, p1, p2), 0) + 1
    assert len(counts) == 6 and min(counts.values()) > 850
    assert photometric_params(np.full(PHOTOMETRIC_DRAWS, 0.5), *args[:-1], 0.0)[:4] == (1.0, 1.0, 1.0, 0.0)


def test_zoom_out_params_cover_every_position():
    seen_top, seen_left = set(), set()
    rng = np.random.default_rng(1)
    for _ in range(3000):
        canvas_h, canvas_w, top, left = zoom_out_params(rng.random(ZOOM_OUT_DRAWS), 10, 8, 1.5)
        assert 8 <= canvas_h <= 11 and 10 <= canvas_w <= 14
        assert 0 <= top <= canvas_h - 8 and 0 <= left <= canvas_w - 10
        seen_top.add(top)
        seen_left.add(left)
    assert seen_top == set(range(4)) and seen_left == set(range(5))  # both ends reached (canvas < 1.5 x)
    assert zoom_out_params(np.zeros(3), 10, 8, 4.0) == (8, 10, 0, 0)


def test_ssd_transforms_draw_a_fixed_count_from_their_generator():
    """What lets the compiled path draw every step's numbers in one block."""
    rows = np.array([[0.1, 0.1, 0.6, 0.7, 0.0]])
    for t, call in (
        (PhotometricDistort(p_each=0.5), lambda t: t.get_params()),
        (ZoomOut(p=1.0), lambda t: t.get_params_dependent_on_data({"shape": (40, 50, 3)}, {})),
        (MinIoURandomCrop(), lambda t: t.get_params_dependent_on_data({"shape": (40, 50, 3)}, {"bboxes": rows})),
    ):
        count = {PhotometricDistort: PHOTOMETRIC_DRAWS, ZoomOut: ZOOM_OUT_DRAWS, MinIoURandomCrop: CROP_DRAWS}[type(t)]
        for seed in range(20):
            t.set_random_seed(seed)
            call(t)
            after = t.random_generator.random()
            reference = np.random.default_rng(seed).random(count + 1)[-1]  # set_random_seed seeds default_rng
            assert after == reference


def ssd_pipeline(hflip=True, p_each=0.5, zoom_p=0.5, min_box_size=1.0, min_visibility=0.0, size=(40, 48)):
    cfg = TransformsConfig(
        size=size, hflip=hflip, photometric_p=p_each, zoom_out_p=zoom_p, min_box_size=min_box_size,
        min_visibility=min_visibility,
    )
    return ssd_train(cfg)


def step_loop(pipe):
    """The reference of ``pipe`` (an ``SSDTrainPipeline``): the generic ``Pipeline`` on its transforms and
    settings (the transforms move to the new pipeline's generators: ``pipe`` itself is not used any more)."""
    return Pipeline(pipe.transforms, as_tensor=pipe.as_tensor, min_box_size=pipe.min_box_size,
                    min_visibility=pipe.min_visibility, name=pipe.name)


@st.composite
def ssd_scenes(draw):
    height, width = draw(st.integers(10, 70)), draw(st.integers(10, 70))
    boxes = []
    for _ in range(draw(st.integers(0, 6))):
        x1, y1 = draw(st.floats(-8, width - 3)), draw(st.floats(-8, height - 3))
        boxes.append([x1, y1, draw(st.floats(x1 + 0.5, width + 8)), draw(st.floats(y1 + 0.5, height + 8))])
    return height, width, np.asarray(boxes, np.float32).reshape(-1, 4), draw(st.integers(0, 2**31 - 1))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    scene=ssd_scenes(), hflip=st.booleans(), p_each=st.sampled_from([0.0, 0.5, 1.0]),
    zoom_p=st.sampled_from([0.0, 0.5, 1.0]), min_box_size=st.sampled_from([1.0, 4.0]),
    min_visibility=st.sampled_from([0.0, 0.5]),
)
def test_compiled_ssd_path_equals_the_step_by_step_loop(scene, hflip, p_each, zoom_p, min_box_size, min_visibility):
    height, width, boxes, seed = scene
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    sample = {"image": image, "boxes": torch.from_numpy(boxes), "labels": torch.arange(len(boxes)) * 3}
    fast = ssd_pipeline(hflip, p_each, zoom_p, min_box_size, min_visibility)
    slow = step_loop(ssd_pipeline(hflip, p_each, zoom_p, min_box_size, min_visibility))
    assert fast.compiled and type(slow) is Pipeline  # the generic loop, step by step (still fused)
    noise = np.random.default_rng(seed + 1)

    def poisoned(call):  # stale pixels in the reused colour buffer must never reach an output
        if fast._scratch_buffer is not None:
            fast._scratch_buffer[...] = noise.integers(0, 256, fast._scratch_buffer.shape, dtype=np.uint8)
        return call()

    for k in range(3):  # seeded calls, then the pipelines' own streams (no seed)
        a, b = poisoned(lambda k=k: fast(sample, seed=seed + k)), slow(sample, seed=seed + k)
        c, d = poisoned(lambda: fast(sample)), slow(sample)
        for x, y in ((a, b), (c, d)):
            assert torch.equal(x["image"], y["image"]) and x["image"].stride() == y["image"].stride()
            assert torch.equal(x["boxes"], y["boxes"]) and torch.equal(x["labels"], y["labels"])
    assert fast.format_stats() == slow.format_stats()
    assert image.sum() == sample["image"].sum()  # the input is not modified


def test_compiled_ssd_path_is_taken_only_for_the_ssd_sequence():
    assert ssd_pipeline().compiled and ssd_pipeline(hflip=False).compiled
    assert isinstance(build_transform("ssd_train", TransformsConfig()), SSDTrainPipeline)
    assert not SSDTrainPipeline(ssd_pipeline().transforms, fuse_geometry=False).compiled
    assert not ssd_train(TransformsConfig(interpolation="area")).compiled  # a resize the fusion does not do
    steps = ssd_pipeline().transforms
    assert is_ssd_sequence(steps) and is_ssd_sequence(steps[:4])
    assert not is_ssd_sequence(steps[1:])  # no photometric step
    assert not is_ssd_sequence([*steps[:4], A.VerticalFlip(p=0.5)])
    for other in (steps[1:], [*steps[:4], A.VerticalFlip(p=0.5)]):
        with pytest.raises(ValueError, match="Pipeline runs any sequence"):
            SSDTrainPipeline(other)
    pipe = ssd_pipeline()
    sample = {"image": np.zeros((20, 20, 3), np.uint8), "boxes": torch.zeros((0, 4)), "labels": torch.zeros(0)}
    pipe.transforms[1].set_random_seed(3)  # the zoom-out no longer shares the pipeline's generator
    out = pipe(sample)  # falls back to the step-by-step loop
    assert out["image"].shape == (3, 40, 48)


def test_compiled_ssd_outputs_never_share_the_reused_colour_buffer():
    """Whole-image crop, no zoom-out, output size = input size: the resampling is the identity, and the
    colour-mapped pixels must still be copied out of the buffer the next sample overwrites."""
    cfg = TransformsConfig(size=(40, 48), hflip=False, photometric_p=1.0, zoom_out_p=0.0, crop_min_ious=(1.0,))
    pipe = ssd_train(cfg)
    assert pipe.compiled
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(3)]
    outs = [
        pipe({"image": im, "boxes": torch.zeros((0, 4)), "labels": torch.zeros(0)}, seed=k)
        for k, im in enumerate(images)
    ]
    first = outs[0]["image"].clone()
    again = pipe({"image": images[0], "boxes": torch.zeros((0, 4)), "labels": torch.zeros(0)}, seed=0)["image"]
    assert torch.equal(first, again) and not torch.equal(outs[0]["image"], outs[1]["image"])
    buffer = pipe._scratch_buffer
    assert buffer is not None and not any(np.shares_memory(o["image"].numpy(), buffer) for o in outs)


def test_prepare_then_finish_over_a_group_equals_calling_one_by_one():
    rng = np.random.default_rng(5)
    samples = []
    for _ in range(6):
        h, w = int(rng.integers(20, 60)), int(rng.integers(20, 60))
        xy = rng.uniform(0, 10, (3, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(5, 15, (3, 2))], axis=1).astype(np.float32)
        samples.append({"image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "boxes": torch.from_numpy(boxes),
                        "labels": torch.arange(3)})
    samples.append({"image": samples[0]["image"]})  # no boxes: done whole in finish
    for pipe in (ssd_pipeline(), Pipeline(ssd_pipeline().transforms[1:], as_tensor=True)):
        reference = [pipe(s, seed=100 + k) for k, s in enumerate(samples)]
        prepared = [pipe.prepare(s, 100 + k) for k, s in enumerate(samples)]
        grouped = [pipe.finish(p) for p in prepared]
        for a, b in zip(reference, grouped):
            assert torch.equal(a["image"], b["image"])
            if "boxes" in a:
                assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["labels"], b["labels"])


def test_out_slot_receives_the_pixels_and_is_returned():
    from cvkit.transforms.pipeline import BatchSlot

    rng = np.random.default_rng(9)
    sample = {"image": rng.integers(0, 256, (50, 60, 3), dtype=np.uint8), "boxes": torch.tensor([[5.0, 5, 30, 40]]),
              "labels": torch.tensor([2])}
    for pipe in (ssd_pipeline(), ssd_pipeline(hflip=False)):
        assert pipe.compiled
        want = pipe(sample, seed=4)["image"]
        for call in (pipe, functools.partial(Pipeline.__call__, pipe)):  # the compiled path and the step loop
            buffer = torch.zeros((2, 40, 48, 3), dtype=torch.uint8)
            views = buffer.permute(0, 3, 1, 2).unbind(0)
            for out, expect_view in ((BatchSlot(buffer.numpy()[1], views[1]), views[1]), (buffer[0], None)):
                got = call(sample, seed=4, out=out)["image"]
                if expect_view is not None:
                    assert got is expect_view
                assert got.untyped_storage().data_ptr() == buffer.untyped_storage().data_ptr()
                assert torch.equal(got, want)
            assert torch.equal(buffer[0], buffer[1])


def test_the_kernel_settings_are_named_once():
    """``SSDConfig`` defines the record ``ssd_sample`` reads field by field: the same names in the same order,
    int64 / float64 / bool; a missing or unknown name is an error, never a silent zero."""
    assert SSD_CONFIG_DTYPE.names == SSDConfig._fields
    kinds = {"width": np.int64, "trials": np.int64, "hue": np.float64, "min_visibility": np.float64,
             "photometric": np.bool_, "flip": np.bool_}
    assert all(SSD_CONFIG_DTYPE[name] == kind for name, kind in kinds.items())
    values = {name: 3 for name in SSDConfig._fields}
    record = SSDConfig(**values).record()
    assert record.dtype == SSD_CONFIG_DTYPE and record.shape == (1,) and record[0]["max_rounds"] == 3
    with pytest.raises(TypeError):
        SSDConfig(**{**values, "trails": 50})  # unknown name
    del values["trials"]
    with pytest.raises(TypeError):
        SSDConfig(**values)  # missing name
    assert STEP_TOTALS_DTYPE.names == ("calls", "applied", "boxes_in", "clipped", "dropped")  # StepStats' fields
    config = SSDConfig(**values, trials=5).record()
    with pytest.raises(ValueError, match="six rows"):  # the kernel writes the input and five steps
        ssd_sample(np.zeros(15), np.zeros((0, 4)), np.array([1.0]), config, np.zeros(5, STEP_TOTALS_DTYPE))


@pytest.mark.slow
def test_the_kernel_rejects_a_record_without_a_field():
    """numba types the kernel against the record it gets: a field it reads and the record lacks is an error."""
    names = [name for name in SSD_CONFIG_DTYPE.names if name != "max_rounds"]
    short = np.zeros(1, np.dtype([(name, SSD_CONFIG_DTYPE[name]) for name in names]))
    with pytest.raises(Exception, match="max_rounds"):
        ssd_sample(np.zeros(15), np.zeros((0, 4)), np.array([1.0]), short, np.zeros(6, STEP_TOTALS_DTYPE))


def test_compiled_draws_are_the_step_loop_parameters():
    """``SSDDraws`` holds, by name, what the step loop's transforms draw with the same seed (their ``params``)."""
    rng = np.random.default_rng(2)
    sample = {"image": rng.integers(0, 256, (50, 60, 3), dtype=np.uint8),
              "boxes": torch.tensor([[5.0, 5, 30, 40], [20, 10, 58, 30]]), "labels": torch.tensor([2, 7])}
    fast, slow = ssd_pipeline(), step_loop(ssd_pipeline())
    photo, zoom, crop = slow.transforms[:3]
    seen_zoom = set()
    for seed in range(40):
        draws = fast.prepare(sample, seed).draws
        assert isinstance(draws, SSDDraws)
        slow(sample, seed=seed)
        assert photo.params  # p = 1; each of its steps with p_each
        assert (draws.brightness, draws.contrast, draws.saturation, draws.hue, draws.permutation) == (
            photo.params["brightness"], photo.params["contrast"], photo.params["saturation"], photo.params["hue"],
            photo.params["permutation"],
        )
        seen_zoom.add(bool(zoom.params))
        if zoom.params:
            assert (draws.canvas, draws.top, draws.left) == (zoom.params["canvas"], zoom.params["top"],
                                                             zoom.params["left"])
        else:
            assert (draws.canvas, draws.top, draws.left) == ((50, 60), 0, 0)
        assert draws.crop == crop.params["crop"] and draws.crop_status in (-1, 0, 1)
        assert all(type(v) is int for v in (*draws.permutation, *draws.canvas, draws.top, draws.left, *draws.crop))
    assert seen_zoom == {True, False}
