"""Small configurations shared by the model tests (a 64x64 input keeps the CPU tests fast)."""

import pytest
import torch

from cvkit.models import LossConfig, ModelConfig, PostprocessConfig
from cvkit.ops import AnchorConfig

SMALL = 64
# 6 levels on a 64x64 input: ceil(64 / step) = 8, 4, 2, 1, 1, 1; all extras strided (no 3x3 -> 1x1 trims)
SMALL_ANCHORS = AnchorConfig(image_size=(SMALL, SMALL), steps=(8, 16, 32, 64, 64, 64))


def small_model_cfg(backbone: str = "resnet18", **kwargs) -> ModelConfig:
    return ModelConfig(backbone=backbone, num_valid_extras=0, **kwargs)


__all__ = ["SMALL", "SMALL_ANCHORS", "small_model_cfg", "one_thread", "LossConfig", "PostprocessConfig"]


@pytest.fixture
def one_thread():
    """Run a test on one thread: on 64x64 inputs OpenMP synchronisation costs more than a second core gives
    (and on a shared 2-core machine the second thread mostly waits)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
