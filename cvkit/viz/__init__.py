"""Pictures: boxes drawn on images, grids, PNG files."""

from cvkit.viz.draw import color_for, draw_boxes, make_grid, save_image, to_uint8_image

__all__ = ["color_for", "draw_boxes", "make_grid", "save_image", "to_uint8_image"]
