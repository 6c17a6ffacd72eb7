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
                         + fv * ((1 - fu) * tap(v0 + 1, u0) + fu * tap(v0 + 1, u0 + 1)))  # fmt: skip
    return out


def test_integer_window_with_canvas_margins_is_pad_then_resize():
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    # canvas 50x60 with the image at (left 12, top 7); crop window x in [5, 45), y in [2, 40); resize to 19x20; flip
    amap = AxisMap(1.0, 12.0, 1.0, 7.0).then(AxisMap(1.0, -5.0, 1.0, -2.0)).then(AxisMap(20 / 40, 0.0, 19 / 38, 0.0))
    amap = amap.then(AxisMap(-1.0, 20.0, 1.0, 0.0))
    got = render(image, amap, (19, 20), cv2.INTER_LINEAR, FILL)
    canvas = cv2.copyMakeBorder(image, 7, 50 - 27, 12, 60 - 42, cv2.BORDER_CONSTANT, value=FILL)
    want = cv2.flip(cv2.resize(canvas[2:40, 5:45], (20, 19), interpolation=cv2.INTER_LINEAR), 1)
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
