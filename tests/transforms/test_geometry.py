"""cvkit.transforms.geometry.render: integer windows (slice / pad / resize / flip) and fractional maps (warp)."""

import cv2
import numpy as np
import pytest

from cvkit.transforms.geometry import AxisMap, render

FILL = (10.0, 20.0, 30.0)


def _bilinear_reference(image, amap, size, fill):
    """Sample the source at amap^-1(p + 0.5) - 0.5 with bilinear weights; taps outside take ``fill``."""
    height, width = size
    ax, bx, ay, by = amap
    src_h, src_w = image.shape[:2]
    padded = np.empty((src_h + 2, src_w + 2, 3))
    padded[:] = fill
    padded[1:-1, 1:-1] = image
    out = np.empty((height, width, 3))
    for i in range(height):
        v = ((i + 0.5) - by) / ay - 0.5
        for j in range(width):
            u = ((j + 0.5) - bx) / ax - 0.5
            u0, v0 = int(np.floor(u)), int(np.floor(v))
            fu, fv = u - u0, v - v0

            def tap(r, c):
                r, c = r + 1, c + 1
                return padded[r, c] if 0 <= r < src_h + 2 and 0 <= c < src_w + 2 else np.asarray(fill)

            out[i, j] = ((1 - fv) * ((1 - fu) * tap(v0, u0) + fu * tap(v0, u0 + 1))
                         + fv * ((1 - fu) * tap(v0 + 1, u0) + fu * tap(v0 + 1, u0 + 1)))
    return out


def test_integer_window_with_narrow_canvas_margins_is_pad_then_resize():
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    # canvas 26x36 with the image at (left 4, top 3); crop window x in [2, 36), y in [1, 24) (margins of 2, 2, 2
    # and 1 px); resize to 19x20; flip. The window is mostly image: padding it is the cheaper way, exactly
    # the pixels of the unfused steps.
    amap = AxisMap(1.0, 4.0, 1.0, 3.0).then(AxisMap(1.0, -2.0, 1.0, -1.0)).then(AxisMap(20 / 34, 0.0, 19 / 23, 0.0))
    amap = amap.then(AxisMap(-1.0, 20.0, 1.0, 0.0))
    got = render(image, amap, (19, 20), cv2.INTER_LINEAR, FILL)
    canvas = cv2.copyMakeBorder(image, 3, 3, 4, 2, cv2.BORDER_CONSTANT, value=FILL)
    want = cv2.flip(cv2.resize(canvas[1:24, 2:36], (20, 19), interpolation=cv2.INTER_LINEAR), 1)
    assert np.array_equal(got, want)


def test_window_outside_the_image_is_all_fill():
    image = np.zeros((10, 10, 3), np.uint8)
    got = render(image, AxisMap(1.0, -20.0, 1.0, 0.0), (5, 6), cv2.INTER_LINEAR, FILL)
    assert got.shape == (5, 6, 3) and (got == np.array(FILL, np.uint8)).all()
    with pytest.raises(ValueError, match="fill"):
        render(image, AxisMap(1.0, -20.0, 1.0, 0.0), (5, 6), cv2.INTER_LINEAR, None)


def test_fractional_map_is_bilinear_sampling_at_pixel_centres():
    image = np.random.default_rng(1).integers(0, 256, (16, 12, 3), dtype=np.uint8)
    amap = AxisMap(1.7, 3.25, 0.8, -2.5)  # x' = 1.7 x + 3.25, y' = 0.8 y - 2.5: fractional window edges
    got = render(image, amap, (11, 23), cv2.INTER_LINEAR, FILL)
    want = _bilinear_reference(image.astype(np.float64), amap, (11, 23), FILL)
    assert got.shape == (11, 23, 3)
    assert np.abs(got.astype(np.float64) - want).max() <= 1.0  # OpenCV's fixed-point weights: one level


def test_a_large_zoom_out_warps_only_the_image_footprint():
    from cvkit.transforms import geometry

    image = np.random.default_rng(2).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    # canvas 160x200 with the image at (left 70, top 30), the whole canvas shown, resized to 64x80, mirrored
    amap = AxisMap(1.0, 70.0, 1.0, 30.0).then(AxisMap(80 / 200, 0.0, 64 / 160, 0.0)).then(AxisMap(-1.0, 80.0, 1.0, 0.0))
    calls = []
    original = geometry._warp_footprint
    geometry._warp_footprint = lambda *a: calls.append(1) or original(*a)
    try:
        got = render(image, amap, (64, 80), cv2.INTER_LINEAR, FILL)
    finally:
        geometry._warp_footprint = original
    assert calls == [1]  # the window is 16x the image: the footprint warp is the cheaper way
    want = _bilinear_reference(image.astype(np.float64), amap, (64, 80), FILL)
    assert np.abs(got.astype(np.float64) - want).max() <= 1.0
    canvas = cv2.copyMakeBorder(image, 30, 90, 70, 80, cv2.BORDER_CONSTANT, value=FILL)
    assert np.abs(got.astype(int) - cv2.flip(cv2.resize(canvas, (80, 64)), 1)).max() <= 1  # the unfused pixels
    far = np.ones((64, 80), bool)
    far[10:30, 30:54] = False  # away from the image's footprint (x 32..52 once mirrored, y 12..28): pure fill
    assert (got[far] == np.array(FILL, np.uint8)).all()


@pytest.mark.parametrize(
    "amap, size",
    [
        (AxisMap(1.0, -3.0, 1.0, -2.0).then(AxisMap(24 / 20, 0.0, 18 / 15, 0.0)), (18, 24)),  # crop + resize
        (AxisMap(1.0, -3.0, 1.0, -2.0).then(AxisMap(-1.0, 25.0, 1.0, 0.0)), (16, 25)),  # crop + flip (no resize)
        (AxisMap(1.0, 0.0, 1.0, 0.0), (20, 30)),  # identity: a copy
        (AxisMap(1.0, 4.0, 1.0, 3.0).then(AxisMap(-1.0, 38.0, 1.0, 0.0)), (26, 38)),  # narrow canvas: pad + flip
        (AxisMap(1.0, 70.0, 1.0, 30.0).then(AxisMap(80 / 200, 0.0, 64 / 160, 0.0)), (64, 80)),  # footprint warp
        (AxisMap(1.0, -40.0, 1.0, 0.0), (5, 6)),  # no image pixel: all fill
        (AxisMap(1.7, 3.25, 0.8, -2.5), (11, 23)),  # fractional: warp
    ],
)
def test_render_into_out_writes_the_same_pixels(amap, size):
    image = np.random.default_rng(3).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    want = render(image, amap, size, cv2.INTER_LINEAR, FILL)
    batch = np.full((2,) + size + (3,), 7, np.uint8)  # render into slot 1 of a batch buffer
    got = render(image, amap, size, cv2.INTER_LINEAR, FILL, out=batch[1])
    assert np.shares_memory(got, batch[1]) and np.array_equal(got, want) and np.array_equal(batch[1], want)
    assert (batch[0] == 7).all()  # nothing written outside the slot
    with pytest.raises(ValueError, match="out has shape"):
        render(image, amap, size, cv2.INTER_LINEAR, FILL, out=np.empty((size[0] + 1, size[1], 3), np.uint8))
