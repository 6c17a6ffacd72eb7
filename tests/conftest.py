"""Shared pytest set-up: seeds, and the `cuda` marker skip when no GPU is present."""

import os

import pytest
import torch
from hypothesis import settings

os.environ.setdefault("CVKIT_TESTING", "1")

# CI runs the same hypothesis examples every time (a red CI must be reproducible); locally they vary,
# which keeps finding new edge cases. Select with HYPOTHESIS_PROFILE=ci|dev.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def one_thread():
    """torch on one thread for the test, then as before (loaded 2-core machines, xdist's two workers)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
