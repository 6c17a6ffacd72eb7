"""The confusion-matrix PNG."""

import pytest
import torch

from cvkit.viz.confusion import plot_confusion_matrix


@pytest.mark.parametrize("normalize", [True, False])
def test_png_written(tmp_path, normalize):
    confusion = torch.tensor([[5, 1, 0], [0, 3, 2], [1, 0, 7]])
    path = plot_confusion_matrix(confusion, ["circle", "square", "star"], tmp_path / "sub" / "cm.png", normalize)
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_shape_mismatch(tmp_path):
    with pytest.raises(ValueError, match="class names"):
        plot_confusion_matrix([[1, 0], [0, 1]], ["a", "b", "c"], tmp_path / "cm.png")
