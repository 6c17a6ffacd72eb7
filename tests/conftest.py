"""Shared pytest set-up: seeds, and the `cuda` marker skip when no GPU is present."""

import os

import pytest
import torch

os.environ.setdefault("CVKIT_TESTING", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
