"""CUDA-only paths: float16 autocast with a GradScaler, and resuming its state (run with ``pytest -m cuda``)."""

from __future__ import annotations

import math

import pytest
import torch

from cvkit.engine import TrainConfig, fit, load_checkpoint
from tests.engine._tiny import TinyCriterion, TinyDetector, TinyPostprocessor, tiny_loader

pytestmark = pytest.mark.cuda


def test_amp_training_on_cuda_saves_and_resumes_the_scaler(tmp_path):
    cfg = TrainConfig(epochs=2, lr=0.05, amp=True, ema=True, device="cuda", progress=False, plots=False)
    model = TinyDetector(batchnorm=True)
    history = fit(model, TinyCriterion(), TinyPostprocessor(), tiny_loader(), None, cfg, tmp_path)
    assert next(model.parameters()).device.type == "cuda"
    assert all(math.isfinite(row["loss"]) for row in history)
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["scaler"]["scale"] > 0 and state["scaler"]["_growth_tracker"] >= 0
    longer = TrainConfig(**{**cfg.__dict__, "epochs": 3})
    resumed = fit(
        TinyDetector(batchnorm=True), TinyCriterion(), TinyPostprocessor(), tiny_loader(), None, longer, tmp_path,
        resume=tmp_path / "checkpoints" / "last.pt",
    )
    assert [row["epoch"] for row in resumed] == [1, 2, 3]
    assert torch.cuda.is_available()
