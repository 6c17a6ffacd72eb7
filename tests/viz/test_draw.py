"""Boxes on images, grids and PNG files."""

import numpy as np
import pytest
import torch

from cvkit.viz import color_for, draw_boxes, make_grid, save_image, to_uint8_image


def test_draw_boxes_outlines_the_covered_pixels():
    image = np.zeros((20, 30, 3), np.uint8)
    out = draw_boxes(image, torch.tensor([[2.0, 3.0, 10.0, 8.0]]))  # no labels: no caption, colour of label 0
    assert image.sum() == 0  # input untouched
    color = np.array(color_for(0))
    drawn = (out == color).all(axis=-1)
    assert drawn[3, 2:10].all() and drawn[7, 2:10].all() and drawn[3:8, 2].all() and drawn[3:8, 9].all()
    assert not drawn[5, 5] and not drawn[2, 2] and not drawn[8, 9] and not drawn[3, 10]


def test_captions_and_colors():
    image = np.zeros((60, 80, 3), np.uint8)
    plain = draw_boxes(image, [[10, 30, 50, 55]], labels=[1])
    named = draw_boxes(image, [[10, 30, 50, 55]], labels=[1], class_names=["a", "b"], scores=[0.9])
    assert (named != plain).any()  # a caption was written above the box
    assert color_for(1) != color_for(2) and color_for(3) == color_for(3)
    assert draw_boxes(image, np.zeros((0, 4))).sum() == 0


def test_to_uint8_image_of_pipeline_outputs_and_float_images():
    image = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    assert to_uint8_image(image) is image
    view = torch.from_numpy(image).permute(2, 0, 1)  # a preset's output: a uint8 channel-last (3, H, W) view
    assert np.array_equal(to_uint8_image(view), image)
    chw = view.contiguous()
    assert np.array_equal(to_uint8_image(chw), image)
    assert np.array_equal(to_uint8_image(chw.float() / 255), image)  # float 0..1
    assert np.array_equal(to_uint8_image(chw.float()), image)  # float 0..255
    with pytest.raises(ValueError):
        to_uint8_image(torch.zeros(2, 3))


def test_grid_and_png_round_trip(tmp_path):
    tiles = [np.full((10, 12, 3), k * 40, np.uint8) for k in range(5)]
    grid = make_grid(tiles, cols=2, pad=1)
    assert grid.shape == (3 * 10 + 4, 2 * 12 + 3, 3)
    assert (grid[1:11, 1:13] == 0).all() and (grid[12:22, 14:26] == 120).all()
    path = save_image(tmp_path / "sub" / "grid.png", grid)
    import cv2

    assert np.array_equal(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB), grid)
    with pytest.raises(ValueError):
        make_grid([])


def test_the_best_scoring_of_overlapping_detections_is_drawn_on_top():
    """Detectors give a box twice with two classes (per-class NMS): the better one's caption must be the one
    that shows (it used to be covered by whichever came later in the list)."""
    from cvkit.viz.draw import color_for, draw_boxes

    image = np.full((60, 80, 3), 255, np.uint8)
    boxes = np.array([[20.0, 20.0, 50.0, 50.0], [20.0, 20.0, 50.0, 50.0]])
    for order in ([0, 1], [1, 0]):
        labels, scores = np.array([1, 2])[order], np.array([0.9, 0.4])[order]
        out = draw_boxes(image, boxes[order], labels, ["a", "b", "c"], scores)
        caption_pixel = out[20 - 4, 20]  # the caption background left of the text, above the box
        assert tuple(int(v) for v in caption_pixel) == tuple(color_for(1)), order
