"""ModelEMA: the update rule, its warmup, integer buffers, and state round trip."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cvkit.engine.ema import ModelEMA


def test_update_rule_with_warmup():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = ModelEMA(model, decay=0.9, warmup_steps=2)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].num_batches_tracked.fill_(7)
    ema.update(model)
    d = 0.9 * (1 - math.exp(-1 / 2))
    expected = d * start["0.weight"] + (1 - d) * model[0].weight.detach()
    assert torch.allclose(ema.module.state_dict()["0.weight"], expected)
    assert int(ema.module[1].num_batches_tracked) == 7
    assert ema.current_decay() == pytest.approx(0.9 * (1 - math.exp(-2 / 2)))
    assert not any(p.requires_grad for p in ema.module.parameters()) and not ema.module.training


def test_constant_decay_converges_and_state_round_trips():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = ModelEMA(model, decay=0.5, warmup_steps=0)
    with torch.no_grad():
        model.weight.fill_(1.0)
    for _ in range(3):
        ema.update(model)
    assert float(ema.module.weight) == pytest.approx(1 - 0.5**3)
    other = ModelEMA(nn.Linear(1, 1, bias=False), decay=0.5, warmup_steps=0)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 3 and torch.equal(other.module.weight, ema.module.weight)
