"""The SSD transforms: the fused photometric map, zoom-out and the min-IoU crop against references."""

import math

import cv2
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cvkit.transforms import MinIoURandomCrop, PhotometricDistort, ZoomOut, hue_matrix, photometric_matrix
from cvkit.transforms._kernels import find_crop_window, photometric_affine
from cvkit.transforms.ssd import GREY_WEIGHTS

factors = st.floats(0.3, 1.7)


def photometric_reference(pixels, brightness, contrast, saturation, hue, permutation, contrast_first):
    """The steps one after another in float64, without clipping (order as torchvision may pick it)."""
    x = pixels.astype(np.float64) * brightness

    def do_contrast(x):
        return contrast * x + (1 - contrast) * (x @ GREY_WEIGHTS).mean()

    if contrast_first:
        x = do_contrast(x)
    grey = x @ GREY_WEIGHTS
    x = saturation * x + (1 - saturation) * grey[..., None]
    x = x @ hue_matrix(hue).T
    if not contrast_first:
        x = do_contrast(x)
    return x[..., list(permutation)]


@settings(max_examples=60, deadline=None)
@given(
    b=factors, c=factors, s=factors, h=st.floats(-0.2, 0.2), perm=st.permutations([0, 1, 2]),
    contrast_first=st.booleans(), seed=st.integers(0, 2**16),
)
def test_photometric_matrix_equals_the_steps_in_either_order(b, c, s, h, perm, contrast_first, seed):
    pixels = np.random.default_rng(seed).integers(0, 256, size=(7, 5, 3))
    grey_mean = float((pixels @ GREY_WEIGHTS).mean())
    affine = photometric_matrix(grey_mean, b, c, s, h, perm)
    fused = pixels @ affine[:, :3].T + affine[:, 3]
    expected = photometric_reference(pixels, b, c, s, h, perm, contrast_first)
    np.testing.assert_allclose(fused, expected, rtol=1e-9, atol=1e-7)
    # the kernel PhotometricDistort.apply uses is the same map, in float32
    kernel = photometric_affine(grey_mean, b, c, s, h, *perm)
    assert kernel.dtype == np.float32
    np.testing.assert_allclose(kernel, affine.astype(np.float32), rtol=1e-6, atol=1e-5)


def test_hue_matrix_keeps_grey_and_luma_and_turns_red_towards_yellow():
    for turns in (0.0, 0.05, -0.13, 0.5):
        m = hue_matrix(turns)
        np.testing.assert_allclose(m @ np.ones(3), np.ones(3), atol=1e-12)  # grey stays grey
        np.testing.assert_allclose(GREY_WEIGHTS @ m, GREY_WEIGHTS, atol=1e-12)  # luma kept
    np.testing.assert_allclose(hue_matrix(0.0), np.eye(3), atol=1e-12)
    red = np.array([[[200, 30, 30]]], np.uint8)
    shifted = np.clip(red.astype(np.float64) @ hue_matrix(0.05).T, 0, 255).round().astype(np.uint8)
    hue_before = int(cv2.cvtColor(red, cv2.COLOR_RGB2HSV_FULL)[0, 0, 0]) * 360 / 256
    hue_after = int(cv2.cvtColor(shifted, cv2.COLOR_RGB2HSV_FULL)[0, 0, 0]) * 360 / 256
    assert 5 < (hue_after - hue_before) % 360 < 35  # about +18 degrees


def test_photometric_distort_image_matches_the_rounded_reference():
    image = np.random.default_rng(0).integers(0, 256, size=(31, 17, 3), dtype=np.uint8)
    t = PhotometricDistort(p_each=1.0)
    t.set_random_seed(3)
    for _ in range(20):
        params = t.get_params()
        out = t.apply(image.copy(), **params)
        ref = photometric_reference(image, params["brightness"], params["contrast"], params["saturation"],
                                    params["hue"], params["permutation"], contrast_first=True)
        assert out.dtype == np.uint8 and out.shape == image.shape
        assert np.abs(out.astype(np.int64) - np.clip(ref, 0, 255).round()).max() <= 1
    off = PhotometricDistort(p_each=0.0)
    off.set_random_seed(0)
    assert off.apply(image, **off.get_params()) is image  # nothing sampled: untouched


def test_zoom_out_places_the_image_and_moves_boxes_exactly():
    image = np.random.default_rng(1).integers(1, 256, size=(20, 30, 3), dtype=np.uint8)
    t = ZoomOut(max_ratio=3.0, fill=(0, 0, 0), p=1.0)
    t.set_random_seed(5)
    boxes = np.array([[0.1, 0.2, 0.5, 0.9, 7.0]])
    for _ in range(10):
        out = t(image=image, bboxes=boxes)
        params = t.params
        top, left = params["top"], params["left"]
        canvas = out["image"]
        assert canvas.shape[:2] == params["canvas"]
        assert np.array_equal(canvas[top : top + 20, left : left + 30], image)
        assert canvas.sum() == image.astype(np.int64).sum()  # everything else is fill
        x1, y1, x2, y2 = out["bboxes"][0, :4] * np.array([canvas.shape[1], canvas.shape[0]] * 2)
        np.testing.assert_allclose([x1, y1, x2, y2], [left + 3, top + 4, left + 15, top + 18], atol=1e-9)
        assert out["bboxes"][0, 4] == 7.0  # extra columns carried


def crop_reference(uniforms, min_ious, boxes, width, height, min_scale, max_aspect):
    """The min-IoU crop rule, written plainly."""
    for r in range(uniforms.shape[0]):
        if min_ious[r] >= 1:
            return (0, 0, 0, width, height)
        for u in uniforms[r]:
            cw = max(1, int((min_scale + (1 - min_scale) * u[0]) * width))
            ch = max(1, int((min_scale + (1 - min_scale) * u[1]) * height))
            if ch / cw > max_aspect or cw / ch > max_aspect:
                continue
            x0, y0 = int(u[2] * (width - cw + 1)), int(u[3] * (height - ch + 1))
            window = (x0, y0, x0 + cw, y0 + ch)
            if len(boxes) == 0:
                return (1, *window)
            for b in boxes:
                cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
                if not (window[0] < cx < window[2] and window[1] < cy < window[3]):
                    continue
                iw = min(window[2], b[2]) - max(window[0], b[0])
                ih = min(window[3], b[3]) - max(window[1], b[1])
                inter = max(iw, 0) * max(ih, 0)
                union = cw * ch + (b[2] - b[0]) * (b[3] - b[1]) - inter
                if inter > 0 and inter / union >= min_ious[r]:
                    return (1, *window)
    return (-1, 0, 0, width, height)


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1), num_boxes=st.integers(0, 5), width=st.integers(8, 400),
    height=st.integers(8, 400), min_scale=st.sampled_from([0.1, 0.3, 0.9]),
)
def test_crop_kernel_matches_the_plain_rule(seed, num_boxes, width, height, min_scale):
    rng = np.random.default_rng(seed)
    uniforms = rng.random((3, 20, 4))
    min_ious = rng.choice([0.1, 0.3, 0.5, 0.7, 0.9, 1.0], size=3)
    xy = rng.uniform(0, 1, size=(num_boxes, 2)) * (width, height)
    wh = rng.uniform(1, 0.8 * min(width, height), size=(num_boxes, 2))
    boxes = np.concatenate([xy, np.minimum(xy + wh, (width, height))], axis=1)
    got = find_crop_window(uniforms, min_ious, boxes, width, height, min_scale, 2.0)
    assert tuple(int(v) for v in got) == crop_reference(uniforms, min_ious, boxes, width, height, min_scale, 2.0)


def test_min_iou_crop_keeps_boxes_with_centre_inside_and_meets_the_minimum():
    rng = np.random.default_rng(0)
    t = MinIoURandomCrop(min_ious=(0.5,), trials=50)
    t.set_random_seed(0)
    found = 0
    for _ in range(50):
        boxes_px = np.sort(rng.uniform(0, 200, size=(4, 2, 2)), axis=1).reshape(4, 4)[:, [0, 2, 1, 3]]
        bboxes = np.concatenate([boxes_px / 200, np.arange(4)[:, None]], axis=1)
        params = t.get_params_dependent_on_data({"shape": (200, 200, 3)}, {"bboxes": bboxes})
        x0, y0, x1, y1 = params["crop"]
        if (x0, y0, x1, y1) == (0, 0, 200, 200):
            continue
        found += 1
        assert 60 <= x1 - x0 <= 200 and 60 <= y1 - y0 <= 200 and 0.5 <= (y1 - y0) / (x1 - x0) <= 2
        out = t.apply_to_bboxes(bboxes, crop=params["crop"], shape=(200, 200, 3))
        centres = (boxes_px[:, :2] + boxes_px[:, 2:]) / 2
        inside = (centres[:, 0] > x0) & (centres[:, 0] < x1) & (centres[:, 1] > y0) & (centres[:, 1] < y1)
        assert out[:, 4].tolist() == np.flatnonzero(inside).tolist()
        back = out[:, :4] * (x1 - x0, y1 - y0, x1 - x0, y1 - y0) + (x0, y0, x0, y0)
        np.testing.assert_allclose(back, boxes_px[inside], atol=1e-9)  # boxes moved exactly
        ious = []
        for b in boxes_px[inside]:
            iw, ih = min(x1, b[2]) - max(x0, b[0]), min(y1, b[3]) - max(y0, b[1])
            inter = max(iw, 0) * max(ih, 0)
            ious.append(inter / ((x1 - x0) * (y1 - y0) + (b[2] - b[0]) * (b[3] - b[1]) - inter))
        assert max(ious) >= 0.5
    assert found > 10
    image = np.zeros((200, 200, 3), np.uint8)
    assert t.apply(image, crop=(10, 20, 50, 90)).shape == (70, 40, 3)


def test_min_iou_crop_without_boxes_and_keep_whole():
    t = MinIoURandomCrop(min_ious=(1.0,))
    t.set_random_seed(0)
    assert t.get_params_dependent_on_data({"shape": (50, 80, 3)}, {"bboxes": np.zeros((0, 5))}) == {
        "crop": (0, 0, 80, 50)
    }
    t = MinIoURandomCrop(min_ious=(0.3,), min_scale=0.5)
    t.set_random_seed(0)
    x0, y0, x1, y1 = t.get_params_dependent_on_data({"shape": (50, 80, 3)}, {"bboxes": np.zeros((0, 5))})["crop"]
    assert 40 <= x1 - x0 <= 80 and 25 <= y1 - y0 <= 50 and math.isclose(t.max_aspect, 2.0)


def test_ssd_transforms_work_inside_albumentations_compose():
    import albumentations as A

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    boxes = [[10, 20, 60, 90], [100, 10, 150, 50], [70, 70, 90, 110]]
    compose = A.Compose(
        [PhotometricDistort(p=1.0), ZoomOut(max_ratio=3.0, p=0.5), MinIoURandomCrop(), A.Resize(64, 64)],
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"], min_width=1, min_height=1),
        seed=0,
    )
    for _ in range(20):
        out = compose(image=image, bboxes=boxes, labels=[0, 1, 2])
        assert out["image"].shape == (64, 64, 3)
        b = np.asarray(out["bboxes"]).reshape(-1, 4)
        assert len(b) == len(out["labels"]) and ((b >= 0) & (b <= 64)).all()
